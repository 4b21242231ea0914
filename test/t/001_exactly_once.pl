
# Copyright: sequin_cdc contributors
#
# Exactly once and commit order under crashes (DESIGN.md invariants 1 and 2).
#
# Two pgbench clients run small transactions on a retained table (3 inserts,
# updates, sometimes a delete; some with subtransactions rolled back or
# released; some transactions rolled back) while the test
# SIGKILLs the capture worker three times (each a crash restart of the whole
# server, so the slot goes back to its last checkpointed position and
# resends) and stops the server with an immediate shutdown twice.
#
# The oracles:
#  - an AFTER ROW trigger writes every row change to an audit table in the
#    same transaction, with the transaction id and a sequence number: exactly
#    what committed, and in which order inside each transaction;
#  - every transaction sets its transaction_annotations to {"xid": ...}, so a
#    change row names its source transaction;
#  - pg_waldump lists the commit records of the WAL: the real commit order
#    (by LSN) and the commit timestamps.
# The change table must equal, row for row and in seq order, the audit rows
# ordered by (commit LSN, position in the transaction).  Counts per action and
# per key, seq uniqueness and order, committed_at and the table state
# rebuilt from the stream are checked as well.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = SequinNode::new_node(
	'exactly_once',
	# keep the WAL for pg_waldump, the commit-order oracle
	wal_keep_size => '1GB',
	# the load would flood the log
	log_statement => 'ddl');
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE src (id bigserial PRIMARY KEY, v int, t text);
	ALTER TABLE src REPLICA IDENTITY FULL;
	CREATE TABLE audit (
		aid bigserial PRIMARY KEY,
		xid bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
		pk bigint NOT NULL,
		action text NOT NULL);
	CREATE FUNCTION audit_trg() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF TG_OP = 'DELETE' THEN
			INSERT INTO audit (pk, action) VALUES (OLD.id, 'delete');
		ELSE
			INSERT INTO audit (pk, action) VALUES (NEW.id, lower(TG_OP));
		END IF;
		RETURN NULL;
	END $$;
	CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON src
		FOR EACH ROW EXECUTE FUNCTION audit_trg();
	CREATE TABLE walcommit (lsn pg_lsn PRIMARY KEY, xid bigint NOT NULL, ts timestamptz NOT NULL);
	SELECT sequin_cdc.create_publication('pub', ARRAY['src']::regclass[]);
});
my $start_lsn = $node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('s', 'pub')");
$node->safe_psql('postgres', "SELECT sequin_cdc.add_change_retention('src')");

# ---------------------------------------------------------------------------
# Load: pgbench in a shell loop that reconnects after every crash.
# ---------------------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
PostgreSQL::Test::Utils::append_to_file("$dir/commit.sql", q{
\set r random(1, 1000000)
\set k random(1, 40)
\set del random(0, 2)
BEGIN;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', json_build_object('xid', pg_current_xact_id()::text)::text);
INSERT INTO src (v, t) SELECT :r + g, 'r' || (:r + g) FROM generate_series(1, 3) g;
UPDATE src SET v = v + 1, t = t || '+' WHERE id = currval('src_id_seq');
UPDATE src SET v = v - 1 WHERE id = currval('src_id_seq') - 3 * :k;
DELETE FROM src WHERE id = currval('src_id_seq') - 3 * :k - 60 AND :del = 0;
COMMIT;
});
PostgreSQL::Test::Utils::append_to_file("$dir/subxact.sql", q{
\set r random(1, 1000000)
\set k random(1, 40)
BEGIN;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', json_build_object('xid', pg_current_xact_id()::text)::text);
INSERT INTO src (v, t) VALUES (:r, 'sub-top');
SAVEPOINT a;
INSERT INTO src (v, t) SELECT :r + g, 'sub-aborted' FROM generate_series(1, 2) g;
UPDATE src SET v = v + 1000 WHERE id = currval('src_id_seq') - 3 * :k - 1;
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
INSERT INTO src (v, t) VALUES (:r, 'sub-kept');
UPDATE src SET t = t || '*' WHERE id = currval('src_id_seq') - 3 * :k - 2;
RELEASE SAVEPOINT b;
UPDATE src SET v = -v WHERE id = currval('src_id_seq') - 3;
COMMIT;
});
PostgreSQL::Test::Utils::append_to_file("$dir/rollback.sql", q{
\set r random(1, 1000000)
BEGIN;
SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', json_build_object('xid', pg_current_xact_id()::text)::text);
INSERT INTO src (v, t) SELECT :r + g, 'rolled back' FROM generate_series(1, 2) g;
DELETE FROM src WHERE id = currval('src_id_seq') - 10;
ROLLBACK;
});
my $stop_file = "$dir/stop";
my $pgbench_log = "$PostgreSQL::Test::Utils::log_path/001_pgbench.log";
my $loop = sprintf(
	q{while [ ! -e '%s' ]; do pgbench -n -h '%s' -p %d -c 2 -R 400 -T 2 -f '%s@6' -f '%s@3' -f '%s@1' postgres >>'%s' 2>&1; sleep 0.1; done},
	$stop_file, $node->host, $node->port, "$dir/commit.sql", "$dir/subxact.sql",
	"$dir/rollback.sql", $pgbench_log);
my $load = SequinNode::start_background([ 'bash', '-c', $loop ]);

sub committed_txns
{
	my $out = SequinNode::try_query($node, 'postgres', 'SELECT count(DISTINCT xid) FROM audit');
	return (defined $out && $out ne '') ? $out : -1;
}

# Wait until the load has committed $more transactions after this call.
sub wait_load_progress
{
	my ($more, $what) = @_;
	my $base = -1;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		my $n = committed_txns();
		$base = $n if $base < 0;
		if ($base >= 0 && $n >= $base + $more)
		{
			pass("load runs $what ($n transactions committed)");
			return;
		}
		usleep(100_000);
	}
	fail("load runs $what");
}

wait_load_progress(200, 'before the first kill');

my $pid = SequinNode::wait_for_worker($node, 's', timeout => 10);
isnt($pid, '', "capture worker $pid runs");

for my $i (1 .. 3)
{
	# Before the second kill, a checkpoint saves the slot's position: that
	# restart resumes from the middle of the stream, the others from its start.
	$node->safe_psql('postgres', 'CHECKPOINT') if $i == 2;
	usleep(200_000 + int(rand(800_000)));
	my $off = -s $node->logfile;
	ok(kill('KILL', $pid), "kill -9 capture worker $pid (#$i)");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $off);
	my $new = SequinNode::wait_for_worker($node, 's', old_pid => $pid, timeout => 60);
	isnt($new, '', "capture worker back after kill -9 #$i");
	$pid = $new;
	wait_load_progress(150, "after kill -9 #$i");
}

for my $i (1 .. 2)
{
	usleep(200_000 + int(rand(800_000)));
	$node->stop('immediate');
	$node->start;
	my $new = SequinNode::wait_for_worker($node, 's', old_pid => $pid, timeout => 60);
	isnt($new, '', "capture worker back after immediate shutdown #$i");
	$pid = $new;
	wait_load_progress(150, "after immediate shutdown #$i");
}

usleep(500_000);
PostgreSQL::Test::Utils::append_to_file($stop_file, '');
$load->finish;

ok(SequinNode::wait_for_capture($node, 'postgres', '120s'),
	'wait_for_capture after the load');

my $stats = $node->safe_psql('postgres', q{
	SELECT (SELECT count(DISTINCT xid) FROM audit),
	       (SELECT count(*) FROM audit),
	       (SELECT count(*) FROM src),
	       (SELECT last_value FROM src_id_seq),
	       (SELECT count(*) FROM sequin_cdc.changes)});
my ($ntx, $naudit, $nsrc, $lastid, $nchanges) = split /\|/, $stats;
diag("load: $ntx committed transactions, $naudit row changes, $nsrc rows left, "
	  . "ids drawn up to $lastid, $nchanges change rows");
cmp_ok($ntx, '>', 500, 'enough committed transactions to mean something');

# ---------------------------------------------------------------------------
# Exactly once, per key and action
# ---------------------------------------------------------------------------
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			SELECT record_pk, count(*) FROM sequin_cdc.changes
			 WHERE action = 'insert' GROUP BY 1 HAVING count(*) <> 1) x}),
	'0',
	'no key has more or less than one insert change');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM src s
		  LEFT JOIN (SELECT record_pk, count(*) n FROM sequin_cdc.changes
		              WHERE action = 'insert' GROUP BY 1) c
		    ON c.record_pk = s.id::text
		 WHERE c.n IS DISTINCT FROM 1}),
	'0',
	'every row of the source table has exactly one insert change');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM sequin_cdc.changes WHERE action = 'insert'}),
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM audit WHERE action = 'insert'}),
	'insert change rows = committed inserted ids');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM sequin_cdc.changes c
		 WHERE NOT EXISTS (SELECT 1 FROM audit a WHERE a.pk::text = c.record_pk
		                                          AND a.action = 'insert')}),
	'0',
	'no change row for an id that never committed');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM sequin_cdc.changes
		 WHERE record->>'t' IN ('sub-aborted', 'rolled back')
		    OR changes->>'t' IN ('sub-aborted', 'rolled back')}),
	'0',
	'nothing of rolled-back transactions or subtransactions is captured');
cmp_ok($node->safe_psql('postgres',
		q{SELECT count(*) FROM sequin_cdc.changes WHERE record->>'t' = 'sub-kept'}),
	'>', 0, 'changes of released subtransactions are captured');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(a || '=' || n, ',' ORDER BY a) FROM (
			SELECT action a, count(*) n FROM sequin_cdc.changes GROUP BY 1) x}),
	$node->safe_psql('postgres', q{
		SELECT string_agg(a || '=' || n, ',' ORDER BY a) FROM (
			SELECT action a, count(*) n FROM audit GROUP BY 1) x}),
	'change rows per action = committed row changes per action');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM
		  (SELECT record_pk, action, count(*) n FROM sequin_cdc.changes GROUP BY 1, 2) c
		  FULL JOIN
		  (SELECT pk::text AS record_pk, action, count(*) n FROM audit GROUP BY 1, 2) a
		  USING (record_pk, action)
		 WHERE c.n IS DISTINCT FROM a.n}),
	'0',
	'change rows per key and action = committed row changes per key and action');

# ---------------------------------------------------------------------------
# seq
# ---------------------------------------------------------------------------
is( $node->safe_psql('postgres',
		'SELECT count(*) - count(DISTINCT seq) FROM sequin_cdc.changes'),
	'0', 'seq is unique');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY id) p
		                        FROM sequin_cdc.changes) x WHERE seq <= p}),
	'0',
	'seq strictly increases with id');

# ---------------------------------------------------------------------------
# Commit order, against the commit records of the WAL
# ---------------------------------------------------------------------------
my $end_lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');
my ($waldump_out, $waldump_err) = ('', '');
{
	local $ENV{TZ} = 'UTC';
	IPC::Run::run [
		'pg_waldump', '-p', $node->data_dir . '/pg_wal',
		'-s', $start_lsn, '-e', $end_lsn, '-r', 'Transaction'
	  ],
	  '>', \$waldump_out, '2>', \$waldump_err;
}
my $copy = '';
my $ncommits = 0;
for my $line (split /\n/, $waldump_out)
{
	next unless $line =~
	  /tx:\s+(\d+), lsn: ([0-9A-F]+\/[0-9A-F]+), .*desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+)/;
	$copy .= "$2\t$1\t$3\n";
	$ncommits++;
}
note "pg_waldump stderr: $waldump_err" if $waldump_err ne '';
$node->safe_psql('postgres', "COPY walcommit FROM STDIN;\n$copy\\.\n");
is( $node->safe_psql('postgres', q{
		SELECT count(DISTINCT xid) FROM audit a
		 WHERE NOT EXISTS (SELECT 1 FROM walcommit w WHERE w.xid = a.xid)}),
	'0',
	"pg_waldump found the commit record of every committed transaction ($ncommits commits)");
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM sequin_cdc.changes
		 WHERE transaction_annotations->>'xid' IS NULL}),
	'0',
	'every change row names its source transaction');

# The whole stream, row for row: audit rows in (commit LSN, position in the
# transaction) order against change rows in seq order.
my $mismatch = $node->safe_psql('postgres', q{
	WITH expected AS (
		SELECT row_number() OVER (ORDER BY w.lsn, a.aid) AS n,
		       a.xid, a.pk::text AS pk, a.action
		  FROM audit a JOIN walcommit w USING (xid)),
	actual AS (
		SELECT row_number() OVER (ORDER BY c.seq) AS n,
		       (c.transaction_annotations->>'xid')::bigint AS xid,
		       c.record_pk AS pk, c.action
		  FROM sequin_cdc.changes c)
	SELECT count(*), min(coalesce(e.n, a.n))
	  FROM expected e FULL JOIN actual a USING (n)
	 WHERE (e.xid, e.pk, e.action) IS DISTINCT FROM (a.xid, a.pk, a.action)});
my ($nbad, $first_bad) = split /\|/, $mismatch;
is($nbad, '0',
	'change rows in seq order = committed row changes in (commit LSN, position in transaction) order'
);
if ($nbad ne '0')
{
	diag("first difference at stream position $first_bad:\n"
		  . $node->safe_psql('postgres', qq{
			WITH expected AS (
				SELECT row_number() OVER (ORDER BY w.lsn, a.aid) AS n,
				       a.xid, a.pk::text AS pk, a.action
				  FROM audit a JOIN walcommit w USING (xid)),
			actual AS (
				SELECT row_number() OVER (ORDER BY c.seq) AS n, c.seq,
				       (c.transaction_annotations->>'xid')::bigint AS xid,
				       c.record_pk AS pk, c.action
				  FROM sequin_cdc.changes c)
			SELECT e.n, e.xid, e.pk, e.action, '<>', a.seq, a.xid, a.pk, a.action
			  FROM expected e FULL JOIN actual a USING (n)
			 WHERE coalesce(e.n, a.n) BETWEEN $first_bad - 3 AND $first_bad + 5
			 ORDER BY coalesce(e.n, a.n)}));
}

is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM sequin_cdc.changes c
		  JOIN walcommit w ON w.xid = (c.transaction_annotations->>'xid')::bigint
		 WHERE c.committed_at <> w.ts}),
	'0',
	'committed_at is the commit time of the source transaction');

# committed_at never goes back in seq order across transactions.  The
# server's own commit timestamps are taken just before the commit record is
# inserted and can be microseconds out of LSN order between concurrent
# commits; such inversions (if any) are the WAL's, and the stream must show
# exactly those and no other.
my $wal_inversions = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (
		SELECT ts, lag(ts) OVER (ORDER BY lsn) p FROM walcommit w
		 WHERE EXISTS (SELECT 1 FROM audit a WHERE a.xid = w.xid)) x
	 WHERE ts < p});
my $stream_inversions = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (
		SELECT committed_at, lag(committed_at) OVER (ORDER BY seq) p
		  FROM sequin_cdc.changes) x
	 WHERE committed_at < p});
note "commit timestamps out of LSN order in the WAL itself: $wal_inversions";
is($stream_inversions, $wal_inversions,
	'committed_at is non-decreasing in seq order (except where the WAL itself is)');

# ---------------------------------------------------------------------------
# Replaying the stream gives the table
# ---------------------------------------------------------------------------
is( $node->safe_psql('postgres', q{
		WITH last AS (
			SELECT DISTINCT ON (record_pk) record_pk, action, record
			  FROM sequin_cdc.changes ORDER BY record_pk, seq DESC),
		live AS (SELECT record_pk, record FROM last WHERE action <> 'delete'),
		tbl AS (SELECT s.id::text AS record_pk, to_jsonb(s) AS record FROM src s)
		SELECT count(*) FROM (
			(SELECT * FROM live EXCEPT ALL SELECT * FROM tbl)
			UNION ALL
			(SELECT * FROM tbl EXCEPT ALL SELECT * FROM live)) x}),
	'0',
	'the last change of every key is the table row (or a delete of an absent row)');

# The kills did happen where it matters: capture restarted each time.
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile);
my $starts = () = $log =~ /sequin_cdc capture of slot "s" started at/g;
cmp_ok($starts, '>=', 6, "capture started $starts times (initial + 3 kills + 2 immediate stops)");

$node->stop;
done_testing();
