# Copyright: sequin_cdc contributors
#
# A capture worker that keeps failing, and sink batches capped by bytes:
#  (a) a change-table trigger raising SQLSTATE 53000 (a systemic error, as
#      a full disk): pg_stat_capture says state 'error' with last_error,
#      its SQLSTATE, the failed attempts and the next one; the launcher
#      backs off (the delay doubles up to restart_delay_max); the server
#      log has one entry per attempt, no row data, and no exit line of the
#      postmaster; nothing is confirmed past the failing change; health()
#      reports it; once the trigger is gone and restart_capture() is called,
#      every change arrives exactly once and the state is back to normal;
#  (b) DROP PUBLICATION under the live slot (past the DDL guard, if there
#      is one): capture stops loudly (state error, SQLSTATE 57000, health()
#      error), the slot is not confirmed past the first change made without
#      it; after the publication is created again every change, those made
#      meanwhile included, arrives once, in order.  The same for a retained
#      table taken out of the publication and added back;
#  (c) a webhook sink with batch_size 10000 over wide rows sends requests
#      of at most max_batch_bytes of elements (a single larger change goes
#      alone), every change once, in seq order.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use HttpReceiver;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('worker_errors',
	'sequin_cdc.restart_delay' => '200ms',
	'sequin_cdc.restart_delay_max' => '2s');
$node->start;
SequinNode::setup_capture($node, slot => 's', publication => 'p');

sub qry { return $node->safe_psql('postgres', $_[0]); }

sub stat_of
{
	my ($col) = @_;
	return qry("SELECT $col FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'");
}

sub poll
{
	my ($sql, $what) = @_;
	ok(SequinNode::poll_until($node, 'postgres', $sql, timeout => 120), $what);
}

# Changes of src in the change table: "count/distinct keys/in order"
sub changes_summary
{
	return qry(q{
		SELECT count(*) || '/' || count(DISTINCT record_pk) || '/' ||
		       (array_agg(record_pk::bigint ORDER BY seq) =
		        array_agg(record_pk::bigint ORDER BY record_pk::bigint))::text
		  FROM sequin_cdc.changes WHERE source_table_name = 'src'});
}

qry("INSERT INTO src VALUES (0, 0, 'warm-up')");
ok(SequinNode::wait_for_capture($node), 'capture runs');

# ---------------------------------------------------------------------------
# (a) a systemic writer error: backoff, state, one log entry per attempt
# ---------------------------------------------------------------------------
qry(q{
	CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'disk full on purpose' USING ERRCODE = '53000';
	END $$;
	CREATE TRIGGER full_disk BEFORE INSERT ON sequin_cdc.changes
		FOR EACH ROW EXECUTE FUNCTION full_disk();
});
my $log_offset = -s $node->logfile;
my $lsn_before = qry("SELECT pg_current_wal_lsn()");
qry("INSERT INTO src SELECT g, g, 'secret-XYZZY-' || g FROM generate_series(1, 5) g");

poll(q{SELECT state = 'error' AND last_error ~ 'disk full on purpose'
	     AND last_error_sqlstate = '53000'
	FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'},
	"state 'error', last_error and its SQLSTATE");
poll(q{SELECT failed_attempts >= 5 FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'},
	'attempts go on');

# the backoff: next attempt - last failure = 200ms doubled per failure, at most 2s
my ($attempts, $wait_ms);
SequinNode::wait_until('a worker that is backing off', sub {
	my $r = qry(q{
		SELECT failed_attempts || ' ' ||
		       round(extract(epoch FROM next_attempt_at - last_error_time) * 1000)
		  FROM sequin_cdc.pg_stat_capture
		 WHERE slot_name = 's' AND next_attempt_at IS NOT NULL});
	($attempts, $wait_ms) = split / /, $r if $r ne '';
	return $r ne '';
});
is($wait_ms, ($attempts >= 5 ? 2000 : 200 * 2**($attempts - 1)),
	"after $attempts failures the launcher waits ${wait_ms}ms (200ms doubled, at most 2s)");
is(stat_of('state'), 'error', "still 'error' while backing off");
cmp_ok(stat_of('confirmed_flush_lsn') . '', 'ne', '', 'slot has a confirmed position');
is(qry("SELECT confirmed_flush_lsn <= '$lsn_before' FROM pg_replication_slots WHERE slot_name = 's'"),
	't', 'the slot is not confirmed past the failing change');
is(qry("SELECT count(*) FROM sequin_cdc.changes WHERE source_table_name = 'src'"), '1',
	'nothing of the failing batch is written');
is(qry("SELECT status || ': ' || detail FROM sequin_cdc.health() WHERE check_name = 'capture s'") =~
	  /^error: capture is stopped: \d+ attempts failed in a row.*disk full on purpose \(SQLSTATE 53000\).*restart_capture/
	? 1 : 0, 1, 'health() reports the stopped capture as an error');

# The server's own log entries since $offset: those of this test's psql
# sessions (their statements, with row data in them) left out.
sub server_log
{
	my ($offset) = @_;
	my @entries = split /^(?=\d{4}-\d\d-\d\d \d)/m,
	  substr(slurp_file($node->logfile), $offset);
	return join '', grep { !/^\S+ \S+ \S+ \[\d+\] 017_worker_errors\.pl / } @entries;
}

# one log entry per attempt, with its context, and no row data
my $before = stat_of('failed_attempts');
my $log = server_log($log_offset);
my $after = stat_of('failed_attempts');
my $entries = () = $log =~ /^\S+ \S+ \S+ \[\d+\] (?:LOG|ERROR|FATAL):  [^\n]*disk full on purpose/mg;
ok($entries >= $before && $entries <= $after,
	"one log entry per failed attempt ($entries entries, $before..$after attempts)");
like($log, qr/LOG:  sequin_cdc capture of slot "s" failed \(attempt 2, next in 0\.400 s\): disk full on purpose/,
	'the entry says which attempt failed and when the next one comes');
like($log, qr/CONTEXT:  .*\n?.*sequin_cdc capture of slot "s" \(writing change rows\), WAL position/,
	'its context says what the worker was doing, and where');
unlike($log, qr/exited with exit code/, 'the postmaster logs no worker exit');
my $started = () = $log =~ /capture of slot "s" started at/g;
is($started, 0, 'the retries log no start line');
unlike($log, qr/XYZZY/, 'no row data in the log');

# fixed: every change once, state back to normal
qry("DROP TRIGGER full_disk ON sequin_cdc.changes");
qry("SELECT sequin_cdc.restart_capture('s')");
poll(q{SELECT state = 'streaming' AND failed_attempts = 0 AND next_attempt_at IS NULL
	FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'},
	'capture resumes at once after restart_capture()');
ok(SequinNode::wait_for_capture($node), 'and catches up');
is(changes_summary(), '6/6/true', 'every change once, in order');
is(qry("SELECT count(*) FROM sequin_cdc.health() WHERE check_name = 'capture s'"), '0',
	'health() has no capture error any more');
like(server_log($log_offset),
	qr/sequin_cdc capture of slot "s" resumed after \d+ failed attempts/, 'the recovery is logged');
is(stat_of('last_error_sqlstate'), '53000', 'last_error stays for the record');

# restart_capture: checked
my ($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.restart_capture('nope')");
like($err, qr/is not a sequin_cdc slot of this database/, 'restart_capture() names a missing slot');
qry("CREATE ROLE nobody_special LOGIN");
($rc, $out, $err) = $node->psql('postgres',
	"SET ROLE nobody_special; SELECT sequin_cdc.restart_capture('s')");
like($err, qr/permission denied/, 'restart_capture() needs the rights drop_slot() needs');

# ---------------------------------------------------------------------------
# (b) DROP PUBLICATION under the live slot
# ---------------------------------------------------------------------------

# A DDL guard may refuse the drop: then drop it past the guard, as a
# superuser whose event triggers do not fire.
sub drop_past_guard
{
	my ($sql) = @_;
	my ($r, $o, $e) = $node->psql('postgres', $sql);
	return if $r == 0;
	note("refused ($e): again with session_replication_role = replica");
	qry("SET session_replication_role = replica; $sql");
}

drop_past_guard("DROP PUBLICATION p");
my $lsn_mid = qry("SELECT pg_current_wal_lsn()");
qry("INSERT INTO src SELECT g, g, 'after drop' FROM generate_series(6, 10) g");
poll(q{SELECT state = 'error' AND last_error ~ 'publication "p" of replication slot "s" was dropped'
	     AND last_error_sqlstate = '57000'
	FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'},
	'DROP PUBLICATION: capture stops loudly, naming the publication');
is(qry("SELECT status FROM sequin_cdc.health() WHERE check_name = 'capture s'"), 'error',
	'health() reports it as an error');
is(qry("SELECT confirmed_flush_lsn <= '$lsn_mid' FROM pg_replication_slots WHERE slot_name = 's'"),
	't', 'the slot is not confirmed past the first change made without the publication');
# a retry that starts meanwhile stops before decoding, with a hint
poll(q{SELECT last_error ~ 'publication "p" of replication slot "s" does not exist'
	FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'},
	'the next attempt checks the publication first');
is(changes_summary(), '6/6/true', 'nothing written meanwhile');

qry("SELECT sequin_cdc.create_publication('p', ARRAY['src']::regclass[])");
qry("INSERT INTO src SELECT g, g, 'after create' FROM generate_series(11, 12) g");
qry("SELECT sequin_cdc.restart_capture('s')");
ok(SequinNode::wait_for_capture($node), 'publication created again: capture catches up');
is(changes_summary(), '13/13/true', 'the changes made without the publication are captured, once, in order');
is(stat_of('state'), 'streaming', 'state back to streaming');

# a retained table taken out of the publication, then added back
drop_past_guard("ALTER PUBLICATION p DROP TABLE src");
$lsn_mid = qry("SELECT pg_current_wal_lsn()");
qry("INSERT INTO src VALUES (13, 13, 'out of the publication')");
poll(q{SELECT state = 'error' AND last_error ~ 'src'
	FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's'},
	'a retained table removed from the publication stops capture, naming it');
is(qry("SELECT confirmed_flush_lsn <= '$lsn_mid' FROM pg_replication_slots WHERE slot_name = 's'"),
	't', 'and the slot is not confirmed past its change');
qry("ALTER PUBLICATION p ADD TABLE src");
qry("SELECT sequin_cdc.restart_capture('s')");
ok(SequinNode::wait_for_capture($node), 'added back: capture catches up');
is(changes_summary(), '14/14/true', 'its change is captured once');

# ---------------------------------------------------------------------------
# (c) sink batches capped by bytes
# ---------------------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir();
my $receiver = HttpReceiver->new(log => "$dir/requests.log", body => 1);
$receiver->start;
my $url = 'http://127.0.0.1:' . $receiver->port . '/hook';
my $cap = 100000;

($rc, $out, $err) = $node->psql('postgres',
	"SELECT sequin_cdc.create_webhook_sink('tiny', '$url', max_batch_bytes => 10)");
like($err, qr/max_batch_bytes must be between 1024 and 268435456/, 'max_batch_bytes is checked');
qry("SELECT sequin_cdc.create_webhook_sink('wide', '$url', batch_size => 10000, max_batch_bytes => $cap)");
is(qry("SELECT max_batch_bytes FROM sequin_cdc.sinks WHERE name = 'wide'"), $cap, 'stored');
qry("SELECT sequin_cdc.create_webhook_sink('dflt', 'http://127.0.0.1:9/x', 'sequin_cdc.changes', '{}', 100, 5000)");
is(qry("SELECT max_batch_bytes FROM sequin_cdc.sinks WHERE name = 'dflt'"), '8388608',
	'existing calls keep working; the default is 8 MB');
qry("SELECT sequin_cdc.drop_sink('dflt')");

# 300 rows of ~20 kB, then one of ~300 kB (larger than the cap on its own)
qry(q{INSERT INTO src SELECT g, g, repeat(md5(g::text), 640) FROM generate_series(100, 399) g});
qry(q{INSERT INTO src VALUES (400, 400, repeat('w', 300000))});
ok(SequinNode::wait_for_capture($node), 'wide rows captured');
my $last_seq = qry("SELECT max(seq) FROM sequin_cdc.changes WHERE record_pk = '400'");
ok(SequinNode::poll_until($node, 'postgres',
		"SELECT cursor_seq >= $last_seq FROM sequin_cdc.sinks WHERE name = 'wide'"),
	'the sink delivers them all');

my @req = $receiver->requests;
my (@seqs, $over, $max_elements);
$over = 0;
$max_elements = 0;
for my $r (@req)
{
	my $data = decode_json($r->{body})->{data};
	push @seqs, map { $_->{metadata}{seq} } @$data;
	my $elements = length($r->{body}) - length('{"data":[]}');
	$over++ if @$data > 1 && $elements > $cap;
	$max_elements = @$data if @$data > $max_elements;
}
my $expected = qry("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM sequin_cdc.changes WHERE record_pk::bigint >= 100");
is(join(',', @seqs), $expected, 'every change delivered once, in seq order');
is($over, 0, "no request of several changes has more than $cap bytes of elements");
cmp_ok(scalar(@req), '>=', 60, scalar(@req) . ' requests for ~6 MB (not one)');
cmp_ok($max_elements, '>', 1, "batches still group changes (up to $max_elements)");
my ($big) = grep { $_->{body} =~ /"record_pk":"400"/ } @req;
is(scalar(@{ decode_json($big->{body})->{data} }), 1, 'a change larger than the cap goes alone');
$receiver->stop;

$node->stop;
done_testing();
