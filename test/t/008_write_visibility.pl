
# Copyright: sequin_cdc contributors
#
# Change rows of a write batch are never lost to a concurrent reader
# (issue 9: rows counted as written but missing after a backlog drain).
#
# The capture worker decodes and writes in one process.  While it decodes
# it carries PROC_IN_LOGICAL_DECODING, and other backends' snapshots leave
# out the xid of such a process.  If it still carried the flag while it
# wrote, a reader that took its snapshot during the write, after a later
# transaction completed, would find the batch's rows left by an xid that is
# neither running (by its snapshot) nor committed, set HEAP_XMIN_INVALID on
# them, and they would stay invisible after the batch commits, while the
# origin and the slot move past them.
#
# (a) deterministic interleaving: one source transaction writes 100 rows to
#     change table ca and one to cb; cb is locked, so the write transaction
#     has inserted the ca rows and waits.  Another transaction completes, a
#     reader counts ca; then cb is released.  Every row must be there, and
#     the worker must not have needed a retry (no error).
# (b) the worker's double check: a change table whose trigger deletes the
#     row it is given makes the batch an error (counted in pg_stat_capture,
#     worker retries), never a silent gap; once the trigger is gone every
#     change arrives, exactly once.  A BEFORE trigger that suppresses a row
#     rejects that change: it is parked (sequin_cdc.parked_changes), the
#     other rows are written, and a retry writes it once the trigger is gone.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = SequinNode::new_node('vis');
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE src_a (id bigint PRIMARY KEY, t text);
	CREATE TABLE src_b (id bigint PRIMARY KEY, t text);
	SELECT sequin_cdc.create_change_table('ca');
	SELECT sequin_cdc.create_change_table('cb');
	SELECT sequin_cdc.create_publication('vis_pub', ARRAY['src_a', 'src_b']::regclass[]);
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('vis_slot', 'vis_pub')");
$node->safe_psql('postgres', q{
	SELECT sequin_cdc.add_change_retention('src_a', change_table => 'ca');
	SELECT sequin_cdc.add_change_retention('src_b', change_table => 'cb');
});
my $pid = SequinNode::wait_for_worker($node, 'vis_slot', timeout => 30);
isnt($pid, '', 'capture worker runs');

sub errors
{
	return $node->safe_psql('postgres',
		"SELECT errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'vis_slot'");
}

# ---------------------------------------------------------------------------
# (a) a reader during the write
# ---------------------------------------------------------------------------
{
	my $lock = $node->background_psql('postgres');
	$lock->query_safe('BEGIN');
	$lock->query_safe('LOCK TABLE cb IN ACCESS EXCLUSIVE MODE');

	$node->safe_psql('postgres', q{
		BEGIN;
		INSERT INTO src_a SELECT g, 'a' || g FROM generate_series(1, 100) g;
		INSERT INTO src_b VALUES (1, 'b1');
		COMMIT;
	});

	# the write transaction has inserted the ca rows and waits for cb
	ok( $node->poll_query_until('postgres', qq{
			SELECT count(*) = 1 FROM pg_locks
			WHERE pid = $pid AND relation = 'cb'::regclass AND NOT granted}),
		'write transaction waits for the locked change table');
	my $writer_xid = $node->safe_psql('postgres', qq{
		SELECT backend_xid FROM pg_stat_activity WHERE pid = $pid});
	isnt($writer_xid, '', "write transaction has xid $writer_xid");

	# a later transaction completes, then a reader looks at ca
	my $later = $node->safe_psql('postgres', 'SELECT txid_current()');
	cmp_ok($later, '>', $writer_xid, 'a later xid completed');
	my $snap_has_writer = $node->safe_psql('postgres', qq{
		SELECT '$writer_xid'::xid8 = ANY (ARRAY(SELECT pg_snapshot_xip(pg_current_snapshot())))});
	is($snap_has_writer, 't', "other backends' snapshots list the write transaction as running");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM ca'), '0',
		'uncommitted change rows are not visible');

	$lock->query_safe('COMMIT');
	$lock->quit;
	ok(SequinNode::wait_for_capture($node), 'capture caught up');

	is( $node->safe_psql('postgres',
			q{SELECT count(*), count(DISTINCT record->>'id'), min((record->>'id')::int), max((record->>'id')::int) FROM ca}),
		'100|100|1|100',
		'every change row of the batch is visible after commit');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM cb'), '1', 'and the row of cb');
	is(errors(), '0', 'the worker wrote the batch once, without an error');
	is( $node->safe_psql('postgres',
			q{SELECT changes_captured FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'vis_slot'}),
		'101',
		'changes_captured counts the committed rows');
}

# ---------------------------------------------------------------------------
# (b) rows deleted by the change table are an error; a row suppressed by a
#     BEFORE trigger is parked
# ---------------------------------------------------------------------------
sub wait_for_error
{
	my ($pattern, $before) = @_;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my $row = $node->safe_psql('postgres',
			"SELECT errors || '|' || coalesce(last_error, '') FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'vis_slot'");
		my ($n, $msg) = split /\|/, $row, 2;
		return $msg if $n > $before && $msg =~ $pattern;
		usleep(100_000);
	}
	return '';
}

# A BEFORE trigger that returns NULL rejects one row: the row is parked
# (016 tests parking), the rest of the batch is written.
{
	my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM ca');
	$node->safe_psql('postgres', q{
		CREATE FUNCTION eat() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
		CREATE TRIGGER eat BEFORE INSERT ON ca FOR EACH ROW
			WHEN (NEW.record->>'t' = 'eaten') EXECUTE FUNCTION eat();
	});
	my $id = 1000 + $rows;
	$node->safe_psql('postgres', "INSERT INTO src_a VALUES ($id, 'eaten'), ($id + 1, 'kept')");
	ok(SequinNode::wait_for_capture($node), 'a BEFORE trigger that returns NULL: capture goes on');
	is($node->safe_psql('postgres',
			"SELECT string_agg(record->>'t', ',' ORDER BY seq) FROM ca WHERE (record->>'id')::int >= $id"),
		'kept', 'a BEFORE trigger that returns NULL: the other row is written');
	like($node->safe_psql('postgres',
			"SELECT stage || ' ' || record_pk || ' ' || error FROM sequin_cdc.parked_changes"),
		qr/^write $id .*was not stored/, 'a BEFORE trigger that returns NULL: the row is parked, not lost');
	$node->safe_psql('postgres', 'DROP TRIGGER eat ON ca; DROP FUNCTION eat()');
	$node->safe_psql('postgres', 'SELECT sequin_cdc.retry_parked_changes()');
	ok(SequinNode::poll_until($node, 'postgres',
			'SELECT count(*) = 0 FROM sequin_cdc.parked_changes'),
		'a BEFORE trigger that returns NULL: the retry writes it once the trigger is gone');
	is($node->safe_psql('postgres',
			"SELECT string_agg(record->>'t', ',' ORDER BY seq) FROM ca WHERE (record->>'id')::int >= $id"),
		'kept,eaten', 'a BEFORE trigger that returns NULL: both rows, once each');
}

for my $case (
	[ 'AFTER', 'DELETE FROM ca WHERE id = NEW.id; RETURN NULL', qr/not visible before commit/,
		'an AFTER trigger that deletes the row' ])
{
	my ($when, $body, $pattern, $what) = @$case;
	my $before = errors();
	my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM ca');
	$node->safe_psql('postgres', qq{
		CREATE FUNCTION eat() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN $body; END \$\$;
		CREATE TRIGGER eat $when INSERT ON ca FOR EACH ROW
			WHEN (NEW.record->>'t' = 'eaten') EXECUTE FUNCTION eat();
	});
	my $id = 1000 + $rows;
	$node->safe_psql('postgres', "INSERT INTO src_a VALUES ($id, 'eaten'), ($id + 1, 'kept')");

	my $msg = wait_for_error($pattern, $before);
	isnt($msg, '', "$what: the batch fails ($msg)");
	is($node->safe_psql('postgres', "SELECT count(*) FROM ca WHERE (record->>'id')::int >= $id"),
		'0', "$what: nothing of the batch is committed");

	$node->safe_psql('postgres', 'DROP TRIGGER eat ON ca; DROP FUNCTION eat()');
	ok(SequinNode::wait_for_capture($node), "$what: capture resumes once the trigger is gone");
	is( $node->safe_psql('postgres',
			"SELECT string_agg(record->>'t', ',' ORDER BY seq) FROM ca WHERE (record->>'id')::int >= $id"),
		'eaten,kept',
		"$what: both changes arrive, once, in order");
}

$node->stop;
done_testing();
