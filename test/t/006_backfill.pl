
# Copyright: sequin_cdc contributors
#
# Backfills (issue 4): read rows consistent with live changes.
#
# (a) race: a 200k-row table is backfilled (twice: 5000 and 500 rows a
#     chunk) while pgbench updates, deletes and inserts random keys, in single
#     statements and in multi-statement transactions, moves a few rows to new
#     keys, and hammers the keys of the chunk being read (found from the
#     backfill's cursor) so that many changes fall inside windows.  Replaying the stream must give the table: for every key the
#     last entry is the table's row, and a key no longer in the table ends
#     with a delete (or an update that moved the row to another key).  Every
#     read row must also agree with the entry before it for its key, and no
#     key is inserted after a read row said it existed.
# (b) cancel: cancel_backfill stops a running backfill; no read row appears
#     afterwards and the slot goes on advancing (no window left open).
# (c) restart mid-backfill, three ways: immediate shutdown at some point of
#     the backfill, kill -9 of the backfill worker (crash restart of the
#     whole server), and immediate shutdown while a chunk's window is open
#     (the worker waits for a lock after its low watermark).  The backfill
#     resumes and completes with exactly one read row per key.
# (d) two backfills of different tables at once, under light writes.
# (e) a backfill that fails (its table lost its primary key mid-way) is
#     'failed' with last_error, and the slot is not held; a TRUNCATE (plus
#     new rows) inside a window leaves no read row after the truncate.
# (f) a backfill worker terminated with pg_terminate_backend (SIGTERM): the
#     backfill must not stay 'running' with no worker while its open window
#     holds the slot.
# (g) backfill() called in a transaction that commits after more than 30 s
#     (the worker's wait for the row) must still run.
# (h) a write whose commit record precedes the low watermark but which is
#     not yet visible to the chunk's snapshot (here: held in a synchronous
#     replication wait) must not leave a stale read row as the key's last
#     entry.
# (i) the start of a backfill's worker waits for the commit, and only for
#     it: not started when the subtransaction that asked is rolled back
#     (also after it was released into a parent that is rolled back),
#     PREPARE TRANSACTION refused, started when a released subtransaction's
#     parent commits.
# Timings and rates are printed with note().  BACKFILL_TESTS=a,c2,...
# runs only some parts.

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
	'backfill',
	shared_buffers => '128MB',
	max_prepared_transactions => '2',
	log_statement => 'none');
$node->start;

my @tables = qw(race cx r1 r2 r3 d1 d2 ef tr tf lt vis cq);
my $create = '';
for my $t (@tables)
{
	$create .= qq{
		CREATE TABLE $t (id bigint PRIMARY KEY, v int NOT NULL, s text,
		                 n numeric(12,2), ts timestamptz);
		ALTER TABLE $t REPLICA IDENTITY FULL;
	};
}
# read rows are rendered by the capture worker with the database's settings:
# pin the ones to_jsonb() depends on for these columns
$node->safe_psql('postgres', qq{
	ALTER DATABASE postgres SET TimeZone = 'UTC';
	ALTER DATABASE postgres SET DateStyle = 'ISO, MDY';
	CREATE EXTENSION sequin_cdc;
	$create
	SELECT sequin_cdc.create_publication('bf_pub', ARRAY['} . join("', '", @tables) . q{']::regclass[]);
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('bf', 'bf_pub')");
isnt(SequinNode::wait_for_worker($node, 'bf', timeout => 30), '', 'capture worker runs');

# BACKFILL_TESTS=a,c2,... runs only those parts (while working on one)
my %only = map { $_ => 1 } split /,/, ($ENV{BACKFILL_TESTS} // '');
sub want { return !%only || $only{ $_[0] } || $only{ substr($_[0], 0, 1) }; }

# Fill $t with rows 1..$n and add its retention rule (after the rows: the
# stream knows them only through backfills).
sub fill
{
	my ($t, $n) = @_;
	my $t0 = time();
	$node->safe_psql('postgres', qq{
		INSERT INTO $t SELECT g, g % 1000, md5(g::text), g / 100.0,
		       timestamptz '2024-01-01 00:00+00' + g * interval '1 second'
		  FROM generate_series(1, $n) g;
		ANALYZE $t;
		SELECT sequin_cdc.add_change_retention('$t', slot => 'bf');
	});
	note sprintf('%s: %d rows loaded in %.1f s', $t, $n, time() - $t0);
}

sub bf_stat
{
	my ($id) = @_;
	my $row = $node->safe_psql('postgres', qq{
		SELECT state, rows_processed, coalesce(estimated_total, -1), chunks,
		       coalesce(last_error, ''), finished_at IS NOT NULL
		  FROM sequin_cdc.pg_stat_backfills WHERE id = $id});
	my %s;
	@s{qw(state rows total chunks error finished)} = split /\|/, $row, 6;
	return \%s;
}

# Poll until backfill $id is no longer running; returns its state ('' on timeout).
sub bf_wait
{
	my ($id, $timeout) = @_;
	my $deadline = time() + ($timeout // 180);
	while (time() < $deadline)
	{
		my $st = SequinNode::try_query($node, 'postgres',
			"SELECT state FROM sequin_cdc.pg_stat_backfills WHERE id = $id");
		return $st if defined $st && $st ne '' && $st ne 'running';
		usleep(50_000);
	}
	return '';
}

sub backfill_pid
{
	return SequinNode::try_query($node, 'postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'sequin_cdc backfill' ORDER BY pid LIMIT 1})
	  // '';
}

sub reads
{
	my ($t) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FROM sequin_cdc.changes
		 WHERE source_table_name = '$t' AND action = 'read'});
}

# The events of the stream of $t, per key: every change row, plus, for an
# update that changed the primary key, a 'moved_away' event for the old key.
sub events_sql
{
	my ($t) = @_;
	return qq{
		c AS (SELECT seq, action, record_pk, record, changes FROM sequin_cdc.changes
		       WHERE source_table_name = '$t'),
		ev AS (
			SELECT record_pk AS k, seq, action, record,
			       (action = 'update' AND changes ? 'id'
			        AND changes->>'id' IS DISTINCT FROM record_pk) AS move_in
			  FROM c
			UNION ALL
			SELECT changes->>'id', seq, 'moved_away', NULL, false FROM c
			 WHERE action = 'update' AND changes ? 'id'
			   AND changes->>'id' IS DISTINCT FROM record_pk)};
}

# Replay check: number of keys whose last entry does not match the table.
sub rebuild_mismatches
{
	my ($t) = @_;
	my $ev = events_sql($t);
	my $sql = qq{
		WITH $ev,
		last AS (SELECT DISTINCT ON (k) k, action, record FROM ev ORDER BY k, seq DESC)
		SELECT %s
		  FROM last l FULL JOIN $t t ON l.k = t.id::text
		 WHERE NOT coalesce(
		         (t.id IS NOT NULL AND l.action NOT IN ('delete', 'moved_away')
		          AND l.record = to_jsonb(t))
		      OR (t.id IS NULL AND l.action IN ('delete', 'moved_away')), false)};
	my $n = $node->safe_psql('postgres', sprintf($sql, 'count(*)'));
	if ($n ne '0')
	{
		diag("keys of $t whose last entry is not the table's row (first 10):\n"
			  . $node->safe_psql('postgres',
				sprintf($sql, q{coalesce(l.k, t.id::text), l.action, l.record, to_jsonb(t)})
				  . ' ORDER BY 1 LIMIT 10'));
	}
	return $n;
}

# Every read row agrees with the entry before it for its key (same record,
# not after a delete), and no key is inserted (or moved into) after a read.
sub read_consistency
{
	my ($t) = @_;
	my $ev = events_sql($t);
	my $sql = qq{
		WITH $ev,
		w AS (
			SELECT k, seq, action, record,
			       lag(action) OVER s AS prev_action, lag(record) OVER s AS prev_record,
			       lead(action) OVER s AS next_action, lead(move_in) OVER s AS next_move_in
			  FROM ev WINDOW s AS (PARTITION BY k ORDER BY seq))
		SELECT %s FROM w WHERE action = 'read' AND (
		       (prev_action IS NOT NULL
		        AND (prev_action IN ('delete', 'moved_away') OR prev_record IS DISTINCT FROM record))
		    OR next_action = 'insert' OR next_move_in)};
	my $n = $node->safe_psql('postgres', sprintf($sql, 'count(*)'));
	if ($n ne '0')
	{
		diag("read rows of $t inconsistent with their neighbours (first 10):\n"
			  . $node->safe_psql('postgres',
				sprintf($sql, 'k, seq, prev_action, prev_record, record, next_action')
				  . ' ORDER BY k, seq LIMIT 10'));
		diag("the whole stream of the first 3 of these keys (seq, action, committed_at, record):\n"
			  . $node->safe_psql('postgres', qq{
				WITH $ev SELECT ev.k, ev.seq, ev.action, x.committed_at, ev.record
				  FROM ev JOIN sequin_cdc.changes x ON x.seq = ev.seq
				 WHERE ev.k IN (SELECT k FROM (} . sprintf($sql, 'DISTINCT k') . qq{) y ORDER BY k LIMIT 3)
				 ORDER BY ev.k, ev.seq}));
	}
	return $n;
}

# Keys with more than one read row, and table keys with no read row.
sub read_once_check
{
	my ($t) = @_;
	my $dup = $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (SELECT record_pk FROM sequin_cdc.changes
		  WHERE source_table_name = '$t' AND action = 'read'
		  GROUP BY 1 HAVING count(*) > 1) x});
	my $missing = $node->safe_psql('postgres', qq{
		SELECT count(*) FROM $t t WHERE NOT EXISTS (
		  SELECT 1 FROM sequin_cdc.changes c WHERE c.source_table_name = '$t'
		     AND c.action = 'read' AND c.record_pk = t.id::text AND c.record = to_jsonb(t))});
	return ($dup, $missing);
}

sub lag_small
{
	my $deadline = time() + 30;
	while (time() < $deadline)
	{
		return 1 if $node->safe_psql('postgres',
			q{SELECT lag_bytes < 65536 FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bf'}) eq 't';
		usleep(100_000);
	}
	return 0;
}

# The slot advances: a new change is captured and the lag drops to ~0.
sub slot_advances
{
	my ($t, $what) = @_;
	$node->safe_psql('postgres', "UPDATE $t SET v = v + 1 WHERE id = 1");
	ok(SequinNode::wait_for_capture($node, 'postgres', '30s'),
		"$what: a new change is captured (wait_for_capture)");
	ok(lag_small(), "$what: the slot's lag drops below 64 kB");
}

# ---------------------------------------------------------------------------
# (a) race with pgbench
# ---------------------------------------------------------------------------
if (want('a'))
{
	my $nrows = 200_000;
	fill('race', $nrows);
	$node->safe_psql('postgres', 'CREATE SEQUENCE race_new START 200001');
	my $dir = PostgreSQL::Test::Utils::tempdir();
	my $keys = 'random(1, 240000)';
	PostgreSQL::Test::Utils::append_to_file("$dir/update.sql", qq{
\\set k $keys
\\set r random(1, 1000000)
UPDATE race SET v = :r, s = md5(:r::text), n = :r / 100.0, ts = now() WHERE id = :k;
});
	PostgreSQL::Test::Utils::append_to_file("$dir/delete.sql", qq{
\\set k $keys
DELETE FROM race WHERE id = :k;
});
	PostgreSQL::Test::Utils::append_to_file("$dir/insert.sql", q{
\set r random(1, 1000000)
INSERT INTO race (id, v, s, n, ts) VALUES (nextval('race_new'), :r, 'inserted', :r / 100.0, now());
});
	PostgreSQL::Test::Utils::append_to_file("$dir/multi.sql", qq{
\\set a $keys
\\set b $keys
\\set lo least(:a, :b)
\\set hi greatest(:a, :b)
\\set r random(1, 1000000)
BEGIN;
UPDATE race SET v = v + 1, s = 'multi ' || :r WHERE id = :lo;
SELECT nextval('race_new') AS new \\gset
INSERT INTO race (id, v, s, n, ts) VALUES (:new, :r, 'multi insert', 1, now());
UPDATE race SET v = -v, ts = now() WHERE id = :new;
DELETE FROM race WHERE id = :hi;
COMMIT;
});
	# hot keys: the chunk the running backfill reads next, so that changes
	# fall inside its windows
	my $hot = qq{
SELECT coalesce(max(last_key[1]::bigint), 0) AS c FROM sequin_cdc.backfills
 WHERE state = 'running' AND source_table = 'race'::regclass \\gset
\\set k :c + random(1, 6000)
\\set r random(1, 1000000)
};
	PostgreSQL::Test::Utils::append_to_file("$dir/hot_update.sql", $hot . q{
UPDATE race SET v = :r, s = 'hot ' || :r, ts = now() WHERE id = :k;
});
	PostgreSQL::Test::Utils::append_to_file("$dir/hot_delete.sql", $hot . q{
DELETE FROM race WHERE id = :k;
});
	# a row moves to a new key (an update of the primary key)
	PostgreSQL::Test::Utils::append_to_file("$dir/move.sql", qq{
\\set k $keys
UPDATE race SET id = nextval('race_new'), s = 'moved' WHERE id = :k;
});
	my ($pgb_out, $pgb_err) = ('', '');
	my $pgbench = SequinNode::start_background(
		[
			'pgbench', '-n', '-h', $node->host, '-p', $node->port,
			'-c', '2', '-j', '2', '-T', '15', '-R', '3000', '--max-tries=10',
			'-f', "$dir/update.sql\@4", '-f', "$dir/delete.sql\@1",
			'-f', "$dir/insert.sql\@2", '-f', "$dir/multi.sql\@2",
			'-f', "$dir/move.sql\@1", '-f', "$dir/hot_update.sql\@6",
			'-f', "$dir/hot_delete.sql\@1", 'postgres'
		],
		'>', \$pgb_out, '2>', \$pgb_err);
	my $t_load = time();

	# let the load run, then start the backfill in the middle of it
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) > 500 FROM sequin_cdc.changes WHERE source_table_name = 'race'}),
		'race: the load runs and is captured');
	my $t0 = time();
	my $bf1 = $node->safe_psql('postgres', "SELECT sequin_cdc.backfill('race', chunk_size => 5000)");
	is(bf_wait($bf1), 'completed', 'race: backfill with chunk_size 5000 completes under load');
	my $t1 = time();
	my $running = $pgbench->pumpable ? 'still running' : 'already finished';
	note sprintf('race: backfill %d (200k rows, chunk 5000) completed in %.2f s under load (%.0f rows/s); pgbench %s',
		$bf1, $t1 - $t0, $nrows / ($t1 - $t0), $running);

	# a second pass, with small chunks, if the load still runs
	my $bf2;
	if ($pgbench->pumpable)
	{
		$bf2 = $node->safe_psql('postgres', "SELECT sequin_cdc.backfill('race', chunk_size => 500)");
		is(bf_wait($bf2), 'completed', 'race: backfill with chunk_size 500 completes under load');
		note sprintf('race: backfill %d (chunk 500) completed after %.2f s', $bf2, time() - $t1);
	}
	$pgbench->finish;
	note sprintf('race: load ran %.1f s; pgbench: %s', time() - $t_load,
		join(' | ', grep { /tps|failed|aborted|processed/ } split /\n/, $pgb_out));
	note "pgbench stderr: " . substr($pgb_err, 0, 2000) if $pgb_err =~ /\S/;

	my $t2 = time();
	ok(SequinNode::wait_for_capture($node, 'postgres', '300s'), 'race: wait_for_capture after the load');
	note sprintf('race: capture caught up %.1f s after the load ended', time() - $t2);

	for my $id (grep { defined } $bf1, $bf2)
	{
		my $s = bf_stat($id);
		is($s->{error}, '', "race: backfill $id has no last_error");
		ok($s->{finished}, "race: backfill $id has finished_at");
	}
	my ($ntable, $nread, $nchanges, $moved) = split /\|/, $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM race),
		       (SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = 'race' AND action = 'read'),
		       (SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = 'race' AND action <> 'read'),
		       (SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = 'race'
		           AND action = 'update' AND changes ? 'id')});
	my $processed = $node->safe_psql('postgres',
		'SELECT sum(rows_processed) FROM sequin_cdc.backfills WHERE source_table = \'race\'::regclass');
	note "race: table has $ntable rows; stream has $nread read rows (backfills read $processed rows: "
	  . ($processed - $nread) . " dropped by the windows) and $nchanges changes ($moved key moves)";
	cmp_ok($nchanges, '>', 5000, 'race: the load made enough changes');

	is(rebuild_mismatches('race'), '0',
		'race: for every key the last entry of the stream is the table row (or a delete / move away)');
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM race t WHERE NOT EXISTS (
			  SELECT 1 FROM sequin_cdc.changes c
			   WHERE c.source_table_name = 'race' AND c.record_pk = t.id::text)}),
		'0', 'race: every key of the table has at least one entry');
	is(read_consistency('race'), '0',
		'race: every read row agrees with the entry before it, and no insert follows a read');
	is( $node->safe_psql('postgres',
			q{SELECT count(*) - count(DISTINCT seq) FROM sequin_cdc.changes}),
		'0', 'race: seq is unique');
	cmp_ok($nread, '<=', $processed, 'race: no more read rows than rows read');
}

# ---------------------------------------------------------------------------
# (b) cancel
# ---------------------------------------------------------------------------
if (want('b'))
{
	my $nrows = 300_000;
	fill('cx', $nrows);
	# one session: start, wait for the first chunks, cancel (no psql start-up
	# in between; the worker reads ~1000 rows/ms here)
	my $bg = $node->background_psql('postgres');
	my $bf = $bg->query_safe("SELECT sequin_cdc.backfill('cx', chunk_size => 1000)");
	my $t0 = time();
	my $done = 0;
	while (time() - $t0 < 60)
	{
		$done = $bg->query_safe("SELECT rows_processed FROM sequin_cdc.backfills WHERE id = $bf");
		last if $done >= 3000;
		usleep(2_000);
	}
	$bg->query_safe("SELECT sequin_cdc.cancel_backfill($bf)");
	my $t_cancel = time();
	$bg->quit;
	note sprintf('cx: cancelled %.3f s after the start, at %d rows processed', $t_cancel - $t0, $done);

	my $s = bf_stat($bf);
	is($s->{state}, 'cancelled', 'cancel: state is cancelled');
	ok($s->{finished}, 'cancel: finished_at is set');
	cmp_ok($s->{rows}, '<', $s->{total}, "cancel: rows_processed ($s->{rows}) < estimated_total ($s->{total})");
	ok(SequinNode::wait_for_capture($node, 'postgres', '120s'), 'cancel: wait_for_capture');
	my $n1 = reads('cx');
	sleep 1;
	ok(SequinNode::wait_for_capture($node, 'postgres', '60s'), 'cancel: wait_for_capture, 1 s later');
	my $n2 = reads('cx');
	is($n2, $n1, "cancel: no read row appears after the cancel ($n1 read rows)");
	is($n2, bf_stat($bf)->{rows}, 'cancel: read rows = rows_processed (every chunk written, none after)');
	is(bf_stat($bf)->{state}, 'cancelled', 'cancel: still cancelled');
	is(backfill_pid(), '', 'cancel: no backfill worker left');
	my ($dup) = read_once_check('cx');
	is($dup, '0', 'cancel: no key read twice');
	slot_advances('cx', 'cancel');
}

# ---------------------------------------------------------------------------
# (c) restart mid-backfill
# ---------------------------------------------------------------------------
sub check_resumed
{
	my ($t, $bf, $what, $log_offset) = @_;
	my $t0 = time();
	is(bf_wait($bf, 300), 'completed', "$what: the backfill completes after the restart");
	note sprintf('%s: completed %.1f s after the restart', $what, time() - $t0);
	ok(SequinNode::wait_for_capture($node, 'postgres', '300s'), "$what: wait_for_capture");
	my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset);
	like($log, qr/sequin_cdc backfill $bf started/, "$what: a worker resumed the backfill after the restart");
	my ($dup, $missing) = read_once_check($t);
	is($dup, '0', "$what: no key has two read rows (no finished chunk repeated)");
	is($missing, '0', "$what: no key is missing a read row equal to its row");
	my $ntable = $node->safe_psql('postgres', "SELECT count(*) FROM $t");
	is(reads($t), $ntable, "$what: read rows = table rows ($ntable)");
	is(bf_stat($bf)->{rows}, $ntable, "$what: rows_processed = table rows");
	is(rebuild_mismatches($t), '0', "$what: the stream rebuilds the table");
}

# Start a backfill and return (id, rows processed when it returned) once it
# has processed at least $min rows, polling from one session.
sub start_and_wait_progress
{
	my ($t, $chunk, $min) = @_;
	my $bg = $node->background_psql('postgres');
	my $bf = $bg->query_safe("SELECT sequin_cdc.backfill('$t', chunk_size => $chunk)");
	my $t0 = time();
	my $row = '';
	while (time() - $t0 < 60)
	{
		$row = $bg->query_safe("SELECT state, rows_processed FROM sequin_cdc.backfills WHERE id = $bf");
		my ($st, $n) = split /\|/, $row;
		last if $st ne 'running' || $n >= $min;
		usleep(1_000);
	}
	$bg->quit;
	return ($bf, $row);
}

# (c1) immediate shutdown somewhere in the middle
if (want('c1'))
{
	fill('r1', 300_000);
	my ($bf, $row) = start_and_wait_progress('r1', 2000, 4000);
	my $off = -s $node->logfile;
	$node->stop('immediate');
	note "r1: immediate shutdown at (state|rows_processed) $row";
	is((split /\|/, $row)[0], 'running', 'restart (immediate): the backfill was running at the shutdown');
	$node->start;
	check_resumed('r1', $bf, 'restart (immediate)', $off);
}

# (c2) kill -9 of the backfill worker: the postmaster restarts everything
if (want('c2'))
{
	fill('r2', 300_000);
	my $bg = $node->background_psql('postgres');
	my $bf = $bg->query_safe("SELECT sequin_cdc.backfill('r2', chunk_size => 2000)");
	my ($pid, $row) = ('', '');
	my $t0 = time();
	while (time() - $t0 < 60)
	{
		$pid = $bg->query_safe(
			q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'sequin_cdc backfill' LIMIT 1}) if $pid eq '';
		$row = $bg->query_safe("SELECT state, rows_processed FROM sequin_cdc.backfills WHERE id = $bf");
		last if $pid ne '' && (split /\|/, $row)[1] >= 4000;
		last if (split /\|/, $row)[0] ne 'running';
		usleep(1_000);
	}
	my $off = -s $node->logfile;
	ok(kill('KILL', $pid), "restart (kill -9): killed backfill worker $pid at (state|rows_processed) $row");
	eval { $bg->quit };
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $off);
	is((split /\|/, $row)[0], 'running', 'restart (kill -9): the backfill was running at the kill');
	check_resumed('r2', $bf, 'restart (kill -9)', $off);
}

# (c3) immediate shutdown while a chunk's window is open: a session takes an
# ACCESS EXCLUSIVE lock, so the worker waits for it after its low watermark
if (want('c3'))
{
	fill('r3', 300_000);
	my ($bf, $row) = start_and_wait_progress('r3', 2000, 4000);
	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe('LOCK TABLE r3 IN ACCESS EXCLUSIVE MODE');
	ok( $node->poll_query_until('postgres', q{
			SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			 WHERE a.backend_type = 'sequin_cdc backfill' AND NOT l.granted}),
		'restart (window open): the backfill worker waits for the lock');
	my $s = bf_stat($bf);
	note "r3: immediate shutdown with a window open, at $s->{rows} of $s->{total} rows";
	ok($s->{state} eq 'running' && $s->{rows} > 0 && $s->{rows} < $s->{total},
		'restart (window open): running, part done');
	my $off = -s $node->logfile;
	$node->stop('immediate');
	eval { $bg->quit };
	$node->start;
	check_resumed('r3', $bf, 'restart (window open)', $off);
}

# ---------------------------------------------------------------------------
# (d) two backfills of different tables at once, with writes to both
# ---------------------------------------------------------------------------
if (want('d'))
{
	fill('d1', 100_000);
	fill('d2', 100_000);
	my $dir = PostgreSQL::Test::Utils::tempdir();
	PostgreSQL::Test::Utils::append_to_file("$dir/d.sql", q{
\set k random(1, 100000)
\set r random(1, 1000000)
UPDATE d1 SET v = :r, ts = now() WHERE id = :k;
UPDATE d2 SET v = :r, s = 'd2 ' || :r WHERE id = 100001 - :k;
});
	my ($out, $err) = ('', '');
	my $pgbench = SequinNode::start_background(
		[
			'pgbench', '-n', '-h', $node->host, '-p', $node->port,
			'-c', '1', '-R', '300', '-T', '6', '-f', "$dir/d.sql", 'postgres'
		],
		'>', \$out, '2>', \$err);
	sleep 1;
	my $t0 = time();
	my ($b1, $b2) = split /\n/, $node->safe_psql('postgres', q{
		SELECT sequin_cdc.backfill('d1', chunk_size => 1000);
		SELECT sequin_cdc.backfill('d2', chunk_size => 700);});
	my $running = $node->safe_psql('postgres',
		"SELECT count(*) FROM sequin_cdc.pg_stat_backfills WHERE id IN ($b1, $b2) AND state = 'running'");
	note "two at once: $running of the two were running right after the start";
	is(bf_wait($b1), 'completed', 'two at once: d1 completes');
	is(bf_wait($b2), 'completed', 'two at once: d2 completes');
	note sprintf('two at once: both completed in %.2f s (%.0f rows/s together)',
		time() - $t0, 200_000 / (time() - $t0));
	$pgbench->finish;
	ok(SequinNode::wait_for_capture($node, 'postgres', '120s'), 'two at once: wait_for_capture');
	for my $t (qw(d1 d2))
	{
		is(rebuild_mismatches($t), '0', "two at once: the stream rebuilds $t");
		is(read_consistency($t), '0', "two at once: read rows of $t agree with their neighbours");
		my ($dup) = read_once_check($t);
		is($dup, '0', "two at once: no key of $t read twice");
		my $n = $node->safe_psql('postgres',
			"SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = '$t' AND action <> 'read'");
		note "$t: " . reads($t) . " read rows, $n changes";
	}
}

# ---------------------------------------------------------------------------
# (e) a backfill that fails
# ---------------------------------------------------------------------------
if (want('e'))
{
	fill('ef', 100_000);
	my ($bf, $row) = start_and_wait_progress('ef', 100, 2000);
	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe('LOCK TABLE ef IN ACCESS EXCLUSIVE MODE');
	$node->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE a.backend_type = 'sequin_cdc backfill' AND NOT l.granted});
	$bg->query_safe('ALTER TABLE ef DROP CONSTRAINT ef_pkey');
	$bg->query_safe('COMMIT');
	$bg->quit;
	is(bf_wait($bf, 60), 'failed', 'failure: the backfill is failed');
	my $s = bf_stat($bf);
	like($s->{error}, qr/primary key/, "failure: last_error says why ($s->{error})");
	ok($s->{finished}, 'failure: finished_at is set');
	ok(SequinNode::wait_for_capture($node, 'postgres', '60s'), 'failure: wait_for_capture');
	is(reads('ef'), bf_stat($bf)->{rows}, 'failure: read rows = rows_processed');
	slot_advances('ef', 'failure');
}

# ---------------------------------------------------------------------------
# (e2) TRUNCATE while a chunk's window is open (and new rows in the same
# transaction, below the backfill's cursor): no read row after the truncate
# ---------------------------------------------------------------------------
if (want('e'))
{
	fill('tr', 100_000);
	my ($bf, $row) = start_and_wait_progress('tr', 100, 2000);
	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe('LOCK TABLE tr IN ACCESS EXCLUSIVE MODE');
	$node->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE a.backend_type = 'sequin_cdc backfill' AND NOT l.granted});
	$bg->query_safe('TRUNCATE tr');
	$bg->query_safe(q{INSERT INTO tr SELECT g, -g, 'after truncate', 0, now() FROM generate_series(1, 5) g});
	$bg->query_safe('COMMIT');
	$bg->quit;
	is(bf_wait($bf, 60), 'completed', 'truncate: the backfill completes');
	ok(SequinNode::wait_for_capture($node, 'postgres', '60s'), 'truncate: wait_for_capture');
	my $tseq = $node->safe_psql('postgres',
		q{SELECT max(seq) FROM sequin_cdc.changes WHERE source_table_name = 'tr' AND action = 'truncate'});
	isnt($tseq, '', 'truncate: the truncate is in the stream');
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM sequin_cdc.changes
			 WHERE source_table_name = 'tr' AND action = 'read' AND seq > $tseq}),
		'0', 'truncate: no read row after the truncate');
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM (
			  SELECT DISTINCT ON (record_pk) record_pk, action, record FROM sequin_cdc.changes
			   WHERE source_table_name = 'tr' AND seq > $tseq ORDER BY record_pk, seq DESC) l
			  FULL JOIN tr t ON l.record_pk = t.id::text
			 WHERE NOT coalesce(l.action <> 'delete' AND l.record = to_jsonb(t), false)}),
		'0', 'truncate: the stream after the truncate rebuilds the table');
	slot_advances('tr', 'truncate');
}

# ---------------------------------------------------------------------------
# (f) the backfill worker gets SIGTERM (pg_terminate_backend) mid-window
# ---------------------------------------------------------------------------
if (want('f'))
{
	fill('tf', 100_000);
	my ($bf, $row) = start_and_wait_progress('tf', 1000, 2000);
	my $bg = $node->background_psql('postgres');
	$bg->query_safe('BEGIN');
	$bg->query_safe('LOCK TABLE tf IN ACCESS EXCLUSIVE MODE');
	$node->poll_query_until('postgres', q{
		SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE a.backend_type = 'sequin_cdc backfill' AND NOT l.granted});
	my $pid = backfill_pid();
	is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"), 't',
		"SIGTERM: pg_terminate_backend of backfill worker $pid");
	$bg->query_safe('COMMIT');
	$bg->quit;
	# Either the backfill goes on (a new worker) and completes, or it ends as
	# failed; it must not stay 'running' with no worker.
	my $st = bf_wait($bf, 30);
	ok($st eq 'completed' || $st eq 'failed',
		"SIGTERM: the backfill does not stay running without a worker (state after 30 s: "
		  . bf_stat($bf)->{state} . ', backfill workers: ' . (backfill_pid() eq '' ? 0 : 1) . ')');
	ok(SequinNode::wait_for_capture($node, 'postgres', '120s'),
		'SIGTERM: the slot is not held by the window of the terminated worker');
	if (bf_stat($bf)->{state} eq 'running')
	{
		# unblock what follows
		$node->safe_psql('postgres', "SELECT sequin_cdc.cancel_backfill($bf)");
		SequinNode::wait_for_capture($node, 'postgres', '60s');
	}
	elsif ($st eq 'completed')
	{
		my ($dup, $missing) = read_once_check('tf');
		is($dup . '/' . $missing, '0/0', 'SIGTERM: completed with one read row per key');
	}
}

# ---------------------------------------------------------------------------
# (g) backfill() in a transaction that commits after more than 30 s
# ---------------------------------------------------------------------------
if (want('g'))
{
	fill('lt', 10_000);
	my $t0 = time();
	my $bf = $node->safe_psql('postgres', q{
		BEGIN;
		SELECT sequin_cdc.backfill('lt');
		SELECT pg_sleep(32) \g /dev/null
		COMMIT;});
	note sprintf('lt: the transaction that called backfill() committed after %.1f s', time() - $t0);
	is(bf_wait($bf, 20), 'completed', 'long transaction: the backfill runs once it commits');
	if (bf_stat($bf)->{state} eq 'running')
	{
		$node->safe_psql('postgres', "SELECT sequin_cdc.cancel_backfill($bf)");
	}
	else
	{
		ok(SequinNode::wait_for_capture($node, 'postgres', '60s'), 'long transaction: wait_for_capture');
		is(reads('lt'), '10000', 'long transaction: one read row per row');
	}
}

# ---------------------------------------------------------------------------
# (h) committed in the WAL before the low watermark, not yet visible to the
# chunk's snapshot: a commit waiting for a synchronous standby that never
# answers (any commit is in this state for a moment; sync rep makes it long)
# ---------------------------------------------------------------------------
if (want('h'))
{
	fill('vis', 1000);
	# everything but the one session commits without waiting for a standby
	$node->safe_psql('postgres', "ALTER SYSTEM SET synchronous_commit = 'local'");
	$node->reload;
	$node->safe_psql('postgres', "ALTER SYSTEM SET synchronous_standby_names = 'nosuch'");
	$node->reload;
	usleep(300_000);
	my $bg = $node->background_psql('postgres', on_error_stop => 0);
	$bg->query_safe("SET synchronous_commit = 'on'");
	$bg->query_until(qr/sent/, "\\echo sent\nUPDATE vis SET v = -1, s = 'new' WHERE id = 500;\n");
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'}),
		'visibility: the update waits for the standby, committed in the WAL');
	my $bf = $node->safe_psql('postgres', "SELECT sequin_cdc.backfill('vis', chunk_size => 100)");
	# the backfill waits for writers of the table to finish before reading
	usleep(1_000_000);
	is(bf_stat($bf)->{rows}, '0',
		'visibility: the backfill waits for the writer that committed before its low watermark');
	# release the waiting commit: it becomes visible
	$node->safe_psql('postgres',
		q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'});
	eval { $bg->quit };
	my $st = bf_wait($bf, 60);
	$node->safe_psql('postgres', 'ALTER SYSTEM RESET synchronous_standby_names');
	$node->reload;
	$node->safe_psql('postgres', 'ALTER SYSTEM RESET synchronous_commit');
	$node->reload;
	is($st, 'completed', 'visibility: the backfill completes');
	is($node->safe_psql('postgres', 'SELECT v FROM vis WHERE id = 500'), '-1', 'visibility: the update is committed');
	ok(SequinNode::wait_for_capture($node, 'postgres', '60s'), 'visibility: wait_for_capture');
	note "vis: stream of key 500: " . join(', ', split /\n/, $node->safe_psql('postgres',
		q{SELECT action || ' v=' || (record->>'v') FROM sequin_cdc.changes
		   WHERE source_table_name = 'vis' AND record_pk = '500' ORDER BY seq}));
	is(rebuild_mismatches('vis'), '0',
		'visibility: the last entry of the updated key is its new row, not the stale read');
}

# ---------------------------------------------------------------------------
# (i) the commit-time start of a backfill worker (workers.c's queue)
# ---------------------------------------------------------------------------
if (want('i'))
{
	fill('cq', 100);
	# A backfill row that no capture worker restarts (its slot is not one),
	# so that only _start_backfill() can start its worker.
	my $bf = $node->safe_psql('postgres', q{
		INSERT INTO sequin_cdc.backfills (source_table, slot_name, chunk_size, run_as)
		VALUES ('cq', 'cq_unserved', 10, current_user::regrole) RETURNING id});
	my $untouched = sub {
		my ($what) = @_;
		usleep(2_000_000);	# a worker would have read all 10 chunks by now
		my $s = bf_stat($bf);
		is("$s->{state}/$s->{chunks}/" . (backfill_pid() eq '' ? 0 : 1), 'running/0/0',
			"commit queue: $what: no worker ran (state/chunks/workers)");
	};

	$node->safe_psql('postgres', qq{
		BEGIN;
		SAVEPOINT s;
		SELECT sequin_cdc._start_backfill($bf);
		ROLLBACK TO SAVEPOINT s;
		COMMIT;});
	$untouched->('asked in a subtransaction rolled back');

	$node->safe_psql('postgres', qq{
		BEGIN;
		SAVEPOINT a;
		SAVEPOINT b;
		SELECT sequin_cdc._start_backfill($bf);
		RELEASE SAVEPOINT b;
		ROLLBACK TO SAVEPOINT a;
		COMMIT;});
	$untouched->('asked in a released subtransaction whose parent is rolled back');

	my ($rc, $out, $err) = $node->psql('postgres', qq{
		BEGIN;
		SELECT sequin_cdc._start_backfill($bf);
		PREPARE TRANSACTION 'cq';});
	like($err, qr/cannot PREPARE a transaction that has started a backfill/,
		'commit queue: PREPARE TRANSACTION is refused');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_prepared_xacts'), '0',
		'commit queue: nothing was prepared');
	$untouched->('PREPARE refused');

	$node->safe_psql('postgres', qq{
		BEGIN;
		SAVEPOINT s;
		SELECT sequin_cdc._start_backfill($bf);
		RELEASE SAVEPOINT s;
		COMMIT;});
	is(bf_wait($bf, 60), 'completed',
		'commit queue: asked in a released subtransaction, started at commit');
	is(bf_stat($bf)->{rows}, '100', 'commit queue: the worker read every row');
	ok(SequinNode::wait_for_capture($node, 'postgres', '60s'), 'commit queue: wait_for_capture');
	is(reads('cq'), '100', 'commit queue: one read row per row');
}

is($node->safe_psql('postgres', q{SELECT errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'bf'}),
	'0', 'the capture worker reported no errors');

$node->stop;
done_testing();
