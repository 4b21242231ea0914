
# Copyright: sequin_cdc contributors
#
# bench/drain_soak.pl -- drain large backlogs again and again under CPU
# contention and a busy reader, and compare the change table with an
# independent test_decoding slot, change for change (issue 9).
#
#     bash test/run.sh SKIP_REGRESS=1 PROVE_TESTS=bench/drain_soak.pl
#     SOAK_DRAINS=30 SOAK_TXNS=25000 bash test/run.sh SKIP_REGRESS=1 PROVE_TESTS=bench/drain_soak.pl
#
# Not part of the test command (it takes minutes per few drains); a soak,
# written as a TAP script so that it runs on the same throwaway clusters.
#
# Each drain:
#   1. the change table is locked in another session (ACCESS EXCLUSIVE), so
#      the capture worker blocks on its first write;
#   2. pgbench makes SOAK_TXNS transactions of 4 row changes (1 insert,
#      2 updates, 1 delete) on orders, REPLICA IDENTITY FULL, with rows big
#      enough that each write batch spills its ChangeBuffer to a file;
#   3. two busy loops take the CPU, a reader session counts the newest rows
#      of the change table and completes a transaction every 10 ms (what a
#      dashboard or a test harness does: the reader that made rows vanish in
#      issue 9), and the lock is released: the worker drains the backlog;
#   4. once capture has caught up, the oracle slot (test_decoding, created
#      beside the capture slot before the first drain) is read, and its
#      changes of orders are compared, in order, with the change rows of
#      the drain: action, id, status, amount of the row the change row
#      records (the new row of an insert or update, the old of a delete).
# Any difference fails the drain and prints the first ones.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../test/t";

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

my $drains = $ENV{SOAK_DRAINS} // 5;
my $txns = $ENV{SOAK_TXNS} // 25000;
my $clients = $ENV{SOAK_CLIENTS} // 2;
my $burners = $ENV{SOAK_BURNERS} // 2;

my $node = SequinNode::new_node('soak',
	shared_buffers => '256MB',
	max_wal_size => '4GB',
	checkpoint_timeout => '30min');
$node->start;
my $connstr = $node->connstr('postgres');

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE orders (
		id bigserial PRIMARY KEY,
		customer_id int,
		status text,
		amount numeric(12,2),
		note text,
		updated_at timestamptz);
	ALTER TABLE orders REPLICA IDENTITY FULL;
	INSERT INTO orders (customer_id, status, amount, note, updated_at)
	SELECT 1 + g % 10000, 'new', g / 100.0,
	       'order ' || g || ': ' || md5(g::text) || ' / ' || md5((g * 31)::text),
	       now()
	FROM generate_series(1, 50000) g;
	SELECT sequin_cdc.create_publication('soak_pub', ARRAY['orders']::regclass[]);
	CREATE TABLE oracle_rows (n bigint, action text, id text, status text, amount text);
	CREATE TABLE capture_rows (n bigint, action text, id text, status text, amount text);
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('soak_slot', 'soak_pub')");
$node->safe_psql('postgres', "SELECT sequin_cdc.add_change_retention('orders')");
isnt(SequinNode::wait_for_worker($node, 'soak_slot', timeout => 30), '', 'capture worker runs');
$node->safe_psql('postgres',
	"SELECT pg_create_logical_replication_slot('oracle', 'test_decoding')");

my $script = $node->basedir . '/soak.pgbench';
open my $fh, '>', $script or die "$script: $!";
print $fh <<'EOS';
\set cid random(1, 10000)
\set amt random(100, 1000000)
BEGIN;
INSERT INTO orders (customer_id, status, amount, note, updated_at) VALUES (:cid, 'new', :amt / 100.0, 'order ' || :cid || ': ' || md5(random()::text) || ' / ' || md5(random()::text), now()) RETURNING id AS newid \gset
\set r1 random(1, :newid)
\set r2 random(1, :newid)
\set r3 random(1, :newid)
UPDATE orders SET status = 'paid', amount = amount + 1.25, updated_at = now() WHERE id = (SELECT id FROM orders WHERE id >= :r1 ORDER BY id LIMIT 1);
UPDATE orders SET status = 'shipped', amount = amount + 2.50, updated_at = now() WHERE id = (SELECT id FROM orders WHERE id >= :r2 ORDER BY id LIMIT 1);
DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE id >= :r3 ORDER BY id LIMIT 1);
END;
EOS
close $fh;

my $bindir = $node->config_data('--bindir');

# The reader: counts the newest change rows and completes a transaction
# every 10 ms, until killed.  (A script file: IPC::Run feeds a scalar stdin
# only while it is pumped.)
my $reader_sql = $node->basedir . '/reader.sql';
my $reader_out = $node->basedir . '/reader.out';
open $fh, '>', $reader_sql or die "$reader_sql: $!";
print $fh "SELECT txid_current(), count(*) FROM sequin_cdc.changes\n"
  . "  WHERE seq > (SELECT max(seq) - 40000 FROM sequin_cdc.changes) \\watch 0.01\n";
close $fh;

# The oracle's changes of orders since the last read, into oracle_rows.
# test_decoding prints the new tuple of an UPDATE after "new-tuple:".
my $oracle_sql = q{
	TRUNCATE oracle_rows;
	INSERT INTO oracle_rows
	SELECT n, lower(substring(data from '^table public\.orders: (INSERT|UPDATE|DELETE):')),
	       substring(t from 'id\[bigint\]:(\d+)'),
	       substring(t from 'status\[text\]:''([^'']*)'''),
	       substring(t from 'amount\[numeric\]:([0-9.-]+)')
	FROM (SELECT row_number() OVER () AS n, data,
	             coalesce(substring(data from 'new-tuple: (.*)$'), data) AS t
	      FROM pg_logical_slot_get_changes('oracle', NULL, NULL, 'include-xids', '0')
	      WHERE data LIKE 'table public.orders:%') s;
};

my ($total_changes, $total_seconds, $failed) = (0, 0, 0);
for my $d (1 .. $drains)
{
	# the lock session's snapshot holds back vacuum during the backlog:
	# start each drain from a clean table, or pgbench slows down drain by drain
	$node->safe_psql('postgres', 'VACUUM orders');
	my $base = $node->safe_psql('postgres', 'SELECT coalesce(max(seq), 0) FROM sequin_cdc.changes');

	my $lock = $node->background_psql('postgres', timeout => 3600);
	$lock->query_safe('BEGIN');
	$lock->query_safe('LOCK TABLE sequin_cdc.changes IN ACCESS EXCLUSIVE MODE');

	my ($pgout, $pgerr, $rerr) = ('', '', '');
	IPC::Run::run([ "$bindir/pgbench", '-n', '-f', $script, '-c', $clients,
			'-j', $clients, '-t', int($txns / $clients), $connstr ],
		'>', \$pgout, '2>', \$pgerr)
	  or die "pgbench failed: $pgerr";

	my @burn = map { SequinNode::start_background([ $^X, '-e', '1 while 1' ]) } 1 .. $burners;
	my $reader = SequinNode::start_background(
		[ "$bindir/psql", '-X', '-q', '-At', '-d', $connstr, '-f', $reader_sql ],
		'<', '/dev/null', '>', $reader_out, '2>', $reader_out . '.err');

	my $t0 = time();
	$lock->query_safe('COMMIT');
	$lock->quit;
	my $caught_up = SequinNode::wait_for_capture($node, 'postgres', '600s');
	my $secs = time() - $t0;

	$reader->kill_kill;
	my $nreads = () = slurp_file($reader_out) =~ /^\d+\|\d+$/mg;
	$_->kill_kill for @burn;

	$node->safe_psql('postgres', $oracle_sql);
	$node->safe_psql('postgres', qq{
		TRUNCATE capture_rows;
		INSERT INTO capture_rows
		SELECT row_number() OVER (ORDER BY seq), action, record->>'id',
		       record->>'status', record->>'amount'
		FROM sequin_cdc.changes WHERE seq > $base;
	});
	my $counts = $node->safe_psql('postgres',
		'SELECT (SELECT count(*) FROM oracle_rows), (SELECT count(*) FROM capture_rows)');
	my ($expected, $got) = split /\|/, $counts;
	my $diff = $node->safe_psql('postgres', q{
		SELECT count(*) FROM oracle_rows o FULL JOIN capture_rows c USING (n)
		WHERE (o.action, o.id, o.status, o.amount) IS DISTINCT FROM
		      (c.action, c.id, c.status, c.amount)});
	my $ok = $caught_up && $diff == 0 && $expected == $got && $expected > 0;
	$ok &&= $nreads > 0;
	ok($ok, sprintf('drain %d: %d changes in %.1f s, %d captured, %d differences; %d reads beside',
			$d, $expected, $secs, $got, $diff, $nreads));
	if (!$ok)
	{
		$failed++;
		diag $node->safe_psql('postgres', q{
			SELECT o.n, o.action, o.id, c.action, c.id
			FROM oracle_rows o FULL JOIN capture_rows c USING (n)
			WHERE (o.action, o.id, o.status, o.amount) IS DISTINCT FROM
			      (c.action, c.id, c.status, c.amount)
			ORDER BY n LIMIT 10});
	}
	$total_changes += $expected;
	$total_seconds += $secs;
}

my $stat = $node->safe_psql('postgres',
	"SELECT errors, changes_captured FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'soak_slot'");
note sprintf('%d drains, %d changes compared, %.0f changes/s drained under load; errors|captured = %s',
	$drains, $total_changes, $total_seconds ? $total_changes / $total_seconds : 0, $stat);
is($failed, 0, 'no drain lost, duplicated or reordered a change');

$node->stop;
done_testing();
