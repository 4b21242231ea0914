
# Copyright: sequin_cdc contributors
#
# No single change stops a slot (DESIGN.md invariant 8): a change that
# cannot be filtered, rendered or written is parked in
# sequin_cdc.parked_changes, in the transaction that skips it, and capture
# goes on.  On one slot, between rows of a healthy table:
#   (a) a retention filter that raises (100 / a with a = 0),
#   (b) a row whose jsonb would pass 256 MB (three 90 MB text columns), and
#       at the end one whose cast to json raises,
#   (c) a change table whose CHECK rejects the row,
#   (d) a change table with a NOT NULL DEFAULT column the writer does not
#       fill (it gets its default; nothing is parked).
# Each bad change is parked once with its stage, SQLSTATE and error, the
# row as far as it rendered (never the row in the server log: one line per
# parked change); rows before and after it on the slot are captured in
# order; pg_stat_capture counts them and health() warns; a kill -9 right
# after parking neither duplicates nor loses anything; a role that does not
# own the change table can neither see, retry nor drop them; after the
# cause is fixed, retry_parked_changes() writes each exactly once, with a
# new seq after everything written before; drop_parked_changes() gives one
# up.
#
# On the old code the slot stalls at (a): the healthy rows after it are
# never captured, parked_changes does not exist, and (d) stops capture
# with a NOT NULL violation.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('parked');
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE good (id bigint PRIMARY KEY, v int);
	CREATE TABLE poison (id bigint PRIMARY KEY, a int);
	CREATE TABLE big (id bigint PRIMARY KEY, a text, b text, c text);
	CREATE TABLE checked (id bigint PRIMARY KEY, v int);
	CREATE TABLE defaulted (id bigint PRIMARY KEY, v int);
	ALTER TABLE good REPLICA IDENTITY FULL;
	ALTER TABLE poison REPLICA IDENTITY FULL;
	ALTER TABLE big REPLICA IDENTITY FULL;
	ALTER TABLE checked REPLICA IDENTITY FULL;
	ALTER TABLE defaulted REPLICA IDENTITY FULL;
	SELECT sequin_cdc.create_change_table('public.ct_check');
	SELECT sequin_cdc.create_change_table('public.ct_default');
	ALTER TABLE ct_check ADD CONSTRAINT no_666 CHECK ((record->>'v')::int <> 666);
	ALTER TABLE ct_default ADD COLUMN note text NOT NULL DEFAULT 'x';
	SELECT sequin_cdc.create_publication('pk_pub',
		ARRAY['good', 'poison', 'big', 'checked', 'defaulted']::regclass[]);
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('pk', 'pk_pub')");
$node->safe_psql('postgres', q{
	SELECT sequin_cdc.add_change_retention('good', slot => 'pk');
	SELECT sequin_cdc.add_change_retention('poison', filter => '100 / a > 1', slot => 'pk');
	SELECT sequin_cdc.add_change_retention('big', slot => 'pk');
	SELECT sequin_cdc.add_change_retention('checked', 'ct_check', slot => 'pk');
	SELECT sequin_cdc.add_change_retention('defaulted', 'ct_default', slot => 'pk');
});
isnt(SequinNode::wait_for_worker($node, 'pk'), '', 'capture worker runs');

my $log_start = -s $node->logfile;

# one transaction each, healthy rows around every bad one
$node->safe_psql('postgres', 'INSERT INTO good VALUES (1, 1)');
$node->safe_psql('postgres', 'INSERT INTO poison VALUES (1, 0)');            # (a)
$node->safe_psql('postgres', 'INSERT INTO poison VALUES (100, 200)');        # filter false: not kept
$node->safe_psql('postgres', 'INSERT INTO poison VALUES (101, 1)');          # filter true: kept
$node->safe_psql('postgres', 'INSERT INTO good VALUES (2, 2)');
$node->safe_psql('postgres',
	q{INSERT INTO big SELECT 1, repeat('a', 90000000), repeat('b', 90000000), repeat('c', 90000000)}); # (b)
$node->safe_psql('postgres', 'INSERT INTO good VALUES (3, 3)');
$node->safe_psql('postgres', 'INSERT INTO checked VALUES (1, 666), (2, 5)'); # (c): 1 rejected, 2 kept
$node->safe_psql('postgres', 'INSERT INTO good VALUES (4, 4)');
$node->safe_psql('postgres', 'INSERT INTO defaulted VALUES (1, 7)');         # (d)
$node->safe_psql('postgres', 'INSERT INTO good VALUES (5, 5)');
ok(SequinNode::wait_for_capture($node), 'capture caught up past every bad change');

# the healthy table flowed, in commit order
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'good'}),
	'1,2,3,4,5', 'rows before and after each bad change captured, in order');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'poison'}),
	'101', 'the poison table keeps flowing: the row its filter takes is captured');
is($node->safe_psql('postgres', q{SELECT string_agg(record_pk, ',' ORDER BY seq) FROM ct_check}),
	'2', 'the CHECK rejects one row only: the other row of its transaction is written');
is($node->safe_psql('postgres', q{SELECT record_pk || ':' || note FROM ct_default}),
	'1:x', '(d) a column the writer does not fill gets its default');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = 'big'}),
	'0', 'the oversize row is not written');

# what is parked, and how
is( $node->safe_psql('postgres', q{
		SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', stage, source_table_name, record_pk,
		                         action, sqlstate, change_table, slot_name), E'\n' ORDER BY id)
		  FROM sequin_cdc.parked_changes}),
	join("\n",
		'filter|poison|1|insert|22012|sequin_cdc.changes|pk',
		'render|big|1|insert|54000|sequin_cdc.changes|pk',
		'write|checked|1|insert|23514|ct_check|pk'),
	'three changes parked, each once, with stage, SQLSTATE, table, key and slot');
is( $node->safe_psql('postgres', q{
		SELECT error FROM sequin_cdc.parked_changes WHERE stage = 'filter'}),
	'division by zero', '(a) the filter\'s error is kept');
like( $node->safe_psql('postgres', q{
		SELECT error FROM sequin_cdc.parked_changes WHERE stage = 'write'}),
	qr/violates check constraint "no_666"/, '(c) the constraint\'s error is kept');
like( $node->safe_psql('postgres', q{
		SELECT error FROM sequin_cdc.parked_changes WHERE stage = 'render'}),
	qr/more than the maximum of 268435455 bytes/, '(b) the size error is kept');
is( $node->safe_psql('postgres', q{
		SELECT record = '{"id": 1, "a": 0}' AND changes IS NULL AND record_columns IS NULL
		  FROM sequin_cdc.parked_changes WHERE stage = 'filter'}),
	't', '(a) the parked row as rendered');
is( $node->safe_psql('postgres', q{
		SELECT record = '{"id": 1, "v": 666}' FROM sequin_cdc.parked_changes WHERE stage = 'write'}),
	't', '(c) the parked row as rendered');
is( $node->safe_psql('postgres', q{
		SELECT format('%s|%s|%s|%s', record IS NULL, record_columns->>'id',
		              length(record_columns->>'a'), record_columns->>'c' = repeat('c', 1024) || '...')
		  FROM sequin_cdc.parked_changes WHERE stage = 'render'}),
	't|1|1027|t', '(b) no record; each column\'s text cut to 1 kB');
is( $node->safe_psql('postgres', q{
		SELECT bool_and(p.commit_lsn > '0/0' AND p.committed_at IS NOT NULL AND p.xid IS NOT NULL)
		  FROM sequin_cdc.parked_changes p}),
	't', 'commit LSN, commit time and xid kept');

# monitoring
is($node->safe_psql('postgres', q{SELECT parked FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'pk'}),
	'3', 'pg_stat_capture counts the parked changes');
like( $node->safe_psql('postgres', q{
		SELECT status || ': ' || detail FROM sequin_cdc.health()
		 WHERE check_name = 'parked changes pk'}),
	qr/^warning: 3 change\(s\).*retry_parked_changes\('pk'\)/, 'health() warns and names the retry');

# the log: one line per parked change, never the row
# (lines of the server's own: the test's statements are logged too)
my $log = join("\n", grep { !/016_parked_changes\.pl/ && !/^\s/ }
	  split /\n/, slurp_file($node->logfile, $log_start));
my @parked_lines = grep { /parked a change/ } split /\n/, $log;
is(scalar(@parked_lines), 3, 'one log line per parked change');
unlike($log, qr/Failing row contains/, 'no log line shows the rejected row');
unlike($log, qr/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/, 'no log line shows the oversize row');
unlike($log, qr/"v": 666/, 'no log line shows the record');
is(scalar(grep { /division by zero/ } split /\n/, $log), 1, 'the filter error is logged once');

# a crash right after parking: nothing parked twice, nothing lost
$node->safe_psql('postgres', 'INSERT INTO poison VALUES (2, 0)');
$node->safe_psql('postgres', 'INSERT INTO good VALUES (6, 6)');
ok(SequinNode::wait_for_capture($node), 'second poison row parked');
$node->stop('immediate');
$node->start;
$node->safe_psql('postgres', 'INSERT INTO poison VALUES (3, 0)');
$node->safe_psql('postgres', 'INSERT INTO good VALUES (7, 7)');
ok(SequinNode::wait_for_capture($node), 'capture caught up after the crash');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk, ',' ORDER BY id) FROM sequin_cdc.parked_changes
		 WHERE stage = 'filter'}),
	'1,2,3', 'after the crash: each poison row parked once');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'good'}),
	'1,2,3,4,5,6,7', 'after the crash: healthy rows once each, in order');

# a role that does not own the change tables
$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	SELECT sequin_cdc.grant_usage('mallory');
	GRANT SELECT ON poison, checked, big TO mallory;
});
my $some_id = $node->safe_psql('postgres', q{SELECT min(id) FROM sequin_cdc.parked_changes});
is($node->safe_psql('postgres', q{SET ROLE mallory; SELECT count(*) FROM sequin_cdc.parked_changes}),
	'0', 'a non-owner sees no parked change');
my ($rc, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT sequin_cdc.retry_parked_changes(ids => ARRAY[$some_id]::bigint[])");
like($err, qr/parked change $some_id does not exist/, 'a non-owner cannot retry by id');
is($node->safe_psql('postgres', q{SET ROLE mallory; SELECT sequin_cdc.retry_parked_changes()}),
	'0', 'a non-owner retrying everything marks nothing');
($rc, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; SELECT sequin_cdc.drop_parked_changes(ARRAY[$some_id]::bigint[])");
like($err, qr/do not exist/, 'a non-owner cannot drop');
($rc, $out, $err) = $node->psql('postgres',
	"SET ROLE mallory; DELETE FROM sequin_cdc.parked_changes; UPDATE sequin_cdc.parked_changes SET retry_requested = true");
is($node->safe_psql('postgres', q{SELECT count(*) || '|' || count(*) FILTER (WHERE retry_requested) FROM sequin_cdc.parked_changes}),
	'5|0', 'nothing deleted or marked by the non-owner');

# bad input
($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.retry_parked_changes('nope')");
like($err, qr/slot "nope" does not exist/, 'retry of an unknown slot is refused');
($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.drop_parked_changes(NULL)");
like($err, qr/ids must be a non-empty array/, 'drop without ids is refused');

# a render error cannot be retried, only dropped
my $render_id = $node->safe_psql('postgres',
	q{SELECT id FROM sequin_cdc.parked_changes WHERE stage = 'render'});
($rc, $out, $err) = $node->psql('postgres',
	"SELECT sequin_cdc.retry_parked_changes(ids => ARRAY[$render_id]::bigint[])");
like($err, qr/cannot be retried/, 'a render error is not retried');

# retry before the fix: the changes stay, with the error again
my $max_seq = $node->safe_psql('postgres',
	q{SELECT max(seq) FROM sequin_cdc.changes});
is($node->safe_psql('postgres', q{SELECT sequin_cdc.retry_parked_changes('pk')}),
	'4', 'retry marks the four retryable changes');
ok( SequinNode::poll_until($node, 'postgres', q{
		SELECT count(*) = 4 FROM sequin_cdc.parked_changes WHERE retries = 1 AND NOT retry_requested}),
	'the worker retried them; they failed again and stay parked');

# fix the causes, retry: written once each, with new seqs
$node->safe_psql('postgres', q{
	UPDATE sequin_cdc.change_retention SET filter = 'coalesce(100 / nullif(a, 0) > 1, true)'
	 WHERE source_table = 'poison'::regclass;
	SELECT sequin_cdc._invalidate_relation('poison');
	ALTER TABLE ct_check DROP CONSTRAINT no_666;
});
is($node->safe_psql('postgres', q{SELECT sequin_cdc.retry_parked_changes('pk')}),
	'4', 'retry after the fix marks them');
ok( SequinNode::poll_until($node, 'postgres', q{
		SELECT count(*) = 1 FROM sequin_cdc.parked_changes}),
	'the worker wrote them; only the render error is left');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk || ':' || (record->>'a'), ',' ORDER BY seq)
		  FROM sequin_cdc.changes WHERE source_table_name = 'poison'}),
	'101:1,1:0,2:0,3:0', 'the poison rows written once each, after the fix, in parked order');
is( $node->safe_psql('postgres', qq{
		SELECT bool_and(seq > $max_seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'poison' AND record_pk <> '101'}),
	't', 'retried changes get new seqs, after every row written before');
is($node->safe_psql('postgres', q{SELECT string_agg(record_pk, ',' ORDER BY seq) FROM ct_check}),
	'2,1', 'the rejected row written once after the constraint was fixed');
is( $node->safe_psql('postgres', q{
		SELECT count(DISTINCT committed_at) || '|' || count(DISTINCT seq) FROM ct_check}),
	'1|2', 'the retried row keeps its source transaction\'s commit time, with a seq of its own');
is($node->safe_psql('postgres', q{SELECT sequin_cdc.retry_parked_changes('pk')}),
	'0', 'nothing left to retry');
is($node->safe_psql('postgres', q{SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = 'poison'}),
	'4', 'no duplicate after another retry');

# drop
is($node->safe_psql('postgres', "SELECT sequin_cdc.drop_parked_changes(ARRAY[$render_id]::bigint[])"),
	'1', 'drop_parked_changes drops the render error');
is($node->safe_psql('postgres', q{SELECT parked FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'pk'}),
	'0', 'pg_stat_capture: nothing parked');
is($node->safe_psql('postgres', q{SELECT count(*) FROM sequin_cdc.health() WHERE check_name LIKE 'parked%'}),
	'0', 'health() no longer warns');

# capture still flows
$node->safe_psql('postgres', 'INSERT INTO good VALUES (8, 8)');
$node->safe_psql('postgres', 'INSERT INTO poison VALUES (4, 0)');
ok(SequinNode::wait_for_capture($node), 'caught up');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name IN ('good', 'poison') AND seq > (SELECT max(seq) - 2 FROM sequin_cdc.changes)}),
	'8,4', 'new changes flow, the fixed filter takes a = 0');

# a render error that is not about size: a cast to json that raises
$node->safe_psql('postgres', q{
	CREATE TYPE mood AS ENUM ('ok', 'bad');
	CREATE FUNCTION mood_json(m mood) RETURNS json LANGUAGE sql VOLATILE AS $$
		SELECT CASE WHEN m = 'bad' THEN (1 / (m = 'ok')::int)::text::json
		            ELSE to_json(m::text) END
	$$;
	CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
	CREATE TABLE moody (id bigint PRIMARY KEY, m mood);
	ALTER TABLE moody REPLICA IDENTITY FULL;
	ALTER PUBLICATION pk_pub ADD TABLE moody;
});
$node->safe_psql('postgres', q{SELECT sequin_cdc.add_change_retention('moody', slot => 'pk')});
$node->safe_psql('postgres', q{INSERT INTO moody VALUES (1, 'bad')});
$node->safe_psql('postgres', q{INSERT INTO moody VALUES (2, 'ok')});
ok(SequinNode::wait_for_capture($node), 'caught up past the failing cast');
is( $node->safe_psql('postgres', q{
		SELECT format('%s|%s|%s|%s|%s', stage, record_pk, sqlstate, error, record_columns)
		  FROM sequin_cdc.parked_changes}),
	'render|1|22012|division by zero|{"m": "bad", "id": "1"}',
	'a cast that raises parks the change, with each column\'s text');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record::text, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'moody'}),
	'{"m": "ok", "id": 2}', 'the next row of the table is captured');

# a cast to json in PL/pgSQL that runs a query: the decoder renders it
# under the historic snapshot (without one, PL/pgSQL cannot run SQL, and a
# SQL-language cast trips an assertion in assertion-enabled servers)
$node->safe_psql('postgres', q{
	CREATE TYPE hue AS ENUM ('red', 'blue', 'dark');
	CREATE FUNCTION hue_json(h hue) RETURNS json LANGUAGE plpgsql AS $$
	BEGIN
		IF h = 'dark' THEN
			RAISE EXCEPTION 'no json for %', h USING ERRCODE = 'XX000';
		END IF;
		RETURN to_json((SELECT h::text || '!'));
	END
	$$;
	CREATE CAST (hue AS json) WITH FUNCTION hue_json(hue);
	CREATE TABLE tinted (id bigint PRIMARY KEY, h hue);
	ALTER TABLE tinted REPLICA IDENTITY FULL;
	ALTER PUBLICATION pk_pub ADD TABLE tinted;
});
$node->safe_psql('postgres', q{SELECT sequin_cdc.add_change_retention('tinted', slot => 'pk')});
$node->safe_psql('postgres', q{INSERT INTO tinted VALUES (1, 'red')});
$node->safe_psql('postgres', q{INSERT INTO tinted VALUES (2, 'dark')});
$node->safe_psql('postgres', q{INSERT INTO tinted VALUES (3, 'blue')});
$node->safe_psql('postgres', 'INSERT INTO good VALUES (9, 9)');
ok(SequinNode::wait_for_capture($node), 'caught up past the PL/pgSQL casts');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record::text, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'tinted'}),
	'{"h": "red!", "id": 1},{"h": "blue!", "id": 3}',
	'a PL/pgSQL cast that runs a query renders, as to_jsonb(row) shows it');
# an internal error (XX000) while rendering is about the change: parked,
# not a stop of the slot (it would fail the same way for ever)
is( $node->safe_psql('postgres', q{
		SELECT format('%s|%s|%s|%s|%s', stage, record_pk, sqlstate, error, record_columns)
		  FROM sequin_cdc.parked_changes WHERE source_table_name = 'tinted'}),
	'render|2|XX000|no json for dark|{"h": "dark", "id": "2"}',
	'an internal error while rendering parks the change, with each column\'s text');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(record_pk, ',' ORDER BY seq) FROM sequin_cdc.changes
		 WHERE source_table_name = 'good' AND seq > (SELECT max(seq) - 1 FROM sequin_cdc.changes)}),
	'9', 'and the slot goes on');

$node->stop;
done_testing();
