
# Copyright: sequin_cdc contributors
#
# Least privilege, SQL side (issue 11):
#  (d) README's "A dedicated role" followed literally: a superuser runs the
#      one-time steps, the table owner publishes its table, and then a role
#      with LOGIN REPLICATION and those grants creates the slot, a change
#      table and a rule (changes captured), a backfill (read rows), a
#      webhook sink (delivered), a retention policy (pg_cron job, old rows
#      deleted), and reads every view and health() without an error row;
#  (a) forged configuration rows, as that role: a backfill run as a
#      superuser, a sink of another owner, a rule for a table it may not
#      read or into a change table it does not own, a policy pointing at
#      another role's pg_cron job, a slots row of no slot: refused, or
#      forced to the role itself; the tables say so afterwards;
#  (b) drop_slot by a REPLICATION role without rights on sequin_cdc.slots:
#      error, and the slot, its row and its replication origin remain;
#  (c) _sink_backlog of another role's sink tells nothing;
#  (e) backfill "where" injections are refused and start nothing.

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
use Time::HiRes qw(time usleep);

SequinNode::require_extensions('pg_cron');

my $dir = PostgreSQL::Test::Utils::tempdir();
my $log_file = "$dir/requests.log";

# ---------------------------------------------------------------------------
# A webhook receiver (test/t/HttpReceiver.pm): answers 200, logs each body
# ---------------------------------------------------------------------------
my $receiver = HttpReceiver->new(log => $log_file, body => 1)->start;
my $port = $receiver->port;

# every change the receiver got: [{record, action, metadata}, ...]
sub received
{
	return map { @{ decode_json($_->{body})->{data} } } $receiver->requests;
}

sub wait_until { return SequinNode::wait_until(@_); }

# ---------------------------------------------------------------------------
# Server (pg_cron in this database)
# ---------------------------------------------------------------------------
my $node = SequinNode::new_node('priv',
	shared_preload_libraries => 'sequin_cdc,pg_cron',
	'cron.database_name' => 'postgres');
$node->start;
my $su = $node->safe_psql('postgres', 'SELECT current_user');

# as the dedicated role
sub as_sequin
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', 'sequin' ]);
}

# as the dedicated role, expecting an error: returns stderr
sub as_sequin_fails
{
	my ($sql, $name) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql,
		extra_params => [ '-U', 'sequin', '-v', 'VERBOSITY=default' ]);
	isnt($rc, 0, "$name: refused");
	return $err;
}

# The application: orders, owned by role app; a table sequin may not read.
$node->safe_psql('postgres', qq{
	CREATE ROLE app NOLOGIN;
	GRANT CREATE ON DATABASE postgres TO app;
	CREATE TABLE public.orders (id bigint PRIMARY KEY, status text, amount numeric);
	ALTER TABLE public.orders OWNER TO app;
	INSERT INTO public.orders SELECT g, 'old', g FROM generate_series(1, 5) g;
	CREATE TABLE public.secrets (id bigint PRIMARY KEY, s text);
	ALTER TABLE public.secrets REPLICA IDENTITY FULL;
	INSERT INTO public.secrets VALUES (1, 'the key');
});

# ---------------------------------------------------------------------------
# (d) README, "A dedicated role", literally
# ---------------------------------------------------------------------------
# 1. a superuser, once
$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE EXTENSION pg_cron;
	CREATE ROLE sequin LOGIN REPLICATION PASSWORD 'change me';
	GRANT CONNECT ON DATABASE postgres TO sequin;
	CREATE SCHEMA sequin AUTHORIZATION sequin;
	GRANT SELECT ON public.orders TO sequin;
	SELECT sequin_cdc.grant_usage('sequin');
});
# 2. the owner of the tables publishes them
$node->safe_psql('postgres', q{
	SET ROLE app;
	ALTER TABLE public.orders REPLICA IDENTITY FULL;
	CREATE PUBLICATION sequin_pub FOR TABLE public.orders WITH (publish_via_partition_root = true);
});
# 3. the dedicated role
isnt(as_sequin("SELECT sequin_cdc.create_slot('sequin_slot', 'sequin_pub')"), '',
	'the dedicated role creates the slot');
is(as_sequin("SELECT sequin_cdc.create_change_table('sequin.order_changes')"),
	'order_changes', 'it creates a change table in its schema (on its search_path)');
my $rule = as_sequin(
	"SELECT sequin_cdc.add_change_retention('public.orders', 'sequin.order_changes', slot => 'sequin_slot')");
ok($rule > 0, 'it adds a retention rule (no "permission denied for schema pg_toast")');
isnt(SequinNode::wait_for_worker($node, 'sequin_slot', timeout => 30), '', 'capture worker runs');

$node->safe_psql('postgres', q{
	INSERT INTO public.orders VALUES (6, 'new', 60);
	UPDATE public.orders SET status = 'paid' WHERE id = 6;
	DELETE FROM public.orders WHERE id = 1;
});
ok(SequinNode::wait_for_capture($node), 'captured');
is(as_sequin(q{SELECT string_agg(action || ':' || record_pk || ':' || (record->>'status'), ',' ORDER BY seq)
                 FROM sequin.order_changes}),
	'insert:6:new,update:6:paid,delete:1:old',
	'the role reads its changes: insert, update, delete, in order');
is(as_sequin(q{SELECT changes::text FROM sequin.order_changes WHERE action = 'update'}),
	'{"status": "new"}', 'with the old values of the update');

# backfill
my $bf = as_sequin("SELECT sequin_cdc.backfill('public.orders', 'sequin.order_changes', chunk_size => 2)");
wait_until('backfill completes', sub {
	as_sequin("SELECT state FROM sequin_cdc.pg_stat_backfills WHERE id = $bf") eq 'completed' });
is(as_sequin("SELECT run_as::text FROM sequin_cdc.backfills WHERE id = $bf"), 'sequin',
	'the backfill runs as the role that asked for it');
ok(SequinNode::wait_for_capture($node), 'backfill rows captured');
is(as_sequin(q{SELECT string_agg(record_pk, ',' ORDER BY record_pk::int)
                 FROM sequin.order_changes WHERE action = 'read'}),
	'2,3,4,5,6', 'the backfill wrote one read row per existing order');
is(as_sequin("SELECT rows_processed FROM sequin_cdc.pg_stat_backfills WHERE id = $bf"), '5',
	'pg_stat_backfills counts them');

# webhook sink
my $url = "http://127.0.0.1:$port/hook";
my $sink = as_sequin(qq{SELECT sequin_cdc.create_webhook_sink('sequin_hook', '$url',
	'sequin.order_changes', headers => '{"Authorization": "Bearer s"}', batch_size => 10)});
ok($sink > 0, 'the role creates a webhook sink');
is($node->safe_psql('postgres', "SELECT owner::text FROM sequin_cdc.sinks WHERE id = $sink"),
	'sequin', 'owned by it');
wait_until('sink worker', sub {
	as_sequin("SELECT worker_pid IS NOT NULL FROM sequin_cdc.pg_stat_sinks WHERE name = 'sequin_hook'") eq 't' });
$node->safe_psql('postgres', "INSERT INTO public.orders VALUES (7, 'new', 70)");
ok(SequinNode::wait_for_capture($node), 'captured');
wait_until('sink delivers', sub { grep { $_->{record}{id} == 7 } received() });
my @got = received();
is(scalar(@got), 1, 'the sink sent the one change made after it was created');
is("$got[0]{action}:$got[0]{record}{status}:$got[0]{metadata}{table_name}", 'insert:new:orders',
	'with the change as the body');
wait_until('backlog 0', sub {
	as_sequin("SELECT backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'sequin_hook'") eq '0' });

# retention policy (pg_cron)
my $job = as_sequin("SELECT sequin_cdc.set_retention_policy('sequin.order_changes', '30 days')");
ok($job > 0, 'the role sets a retention policy');
is($node->safe_psql('postgres', "SELECT username || ' ' || command FROM cron.job WHERE jobid = $job"),
	q{sequin CALL sequin_cdc.run_retention('sequin.order_changes'::regclass)},
	'its pg_cron job runs as the role');
as_sequin(q{UPDATE sequin.order_changes SET committed_at = committed_at - interval '60 days'
             WHERE action = 'delete'});
is(as_sequin("CALL sequin_cdc.run_retention('sequin.order_changes')"), '1',
	'run_retention as the role deletes the one change older than the window');
is(as_sequin("SELECT count(*) FROM sequin.order_changes WHERE action = 'delete'"), '0', 'it is gone');

# every view and health()
is(as_sequin(q{SELECT state || ' ' || (changes_captured > 0) || ' ' || (errors = 0)
                 FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'sequin_slot'}),
	'streaming true true', 'pg_stat_capture as the role');
is(as_sequin(q{SELECT state || ' ' || backlog || ' ' || (delivered >= 1) || ' ' || owner
                 FROM sequin_cdc.pg_stat_sinks WHERE name = 'sequin_hook'}),
	'active 0 true sequin', 'pg_stat_sinks as the role');
is(as_sequin("SELECT table_name || ' ' || state || ' ' || rows_processed FROM sequin_cdc.pg_stat_backfills WHERE id = $bf"),
	'orders completed 5', 'pg_stat_backfills as the role');
is(as_sequin(q{SELECT change_table || ' ' || keep || ' ' || job_state || ' ' || jobid FROM sequin_cdc.pg_stat_retention}),
	"order_changes 30 days scheduled $job", 'pg_stat_retention as the role');
my $health = as_sequin(q{SELECT string_agg(check_name || '=' || status, ',' ORDER BY check_name)
                           FROM sequin_cdc.health()});
unlike($health, qr/=error/, 'health() as the role: no error');
like($health, qr/output_plugin_libraries=ok/, 'health() reads output_plugin_libraries for the role');
like($health, qr/publication covers public\.orders=ok/, 'health() sees the publication cover the table (by OID)');
like($health, qr/worker sequin_slot=ok/, 'health() sees the worker');
like($health, qr/sink sequin_hook=ok/, 'health() sees the sink');
like($health, qr/retention sequin\.order_changes=ok/, 'health() sees the retention job');

# ---------------------------------------------------------------------------
# (a) forged configuration rows, as the dedicated role
# ---------------------------------------------------------------------------
# a backfill as a superuser: run_as is forced to the role
my $forged = as_sequin(qq{INSERT INTO sequin_cdc.backfills (source_table, slot_name, chunk_size, run_as, state)
	VALUES ('public.orders', 'sequin_slot', 10, '$su', 'cancelled') RETURNING id});
is(as_sequin("SELECT run_as::text FROM sequin_cdc.backfills WHERE id = $forged"), 'sequin',
	'a backfills row inserted with run_as => superuser runs as the role itself');
my $err = as_sequin_fails("UPDATE sequin_cdc.backfills SET run_as = '$su' WHERE id = $forged",
	'changing run_as to a superuser');
like($err, qr/cannot change what backfill \d+ reads or as whom/, 'says what is fixed');
is($node->safe_psql('postgres', "SELECT run_as::text FROM sequin_cdc.backfills WHERE id = $forged"),
	'sequin', 'run_as unchanged');
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.backfills (source_table, slot_name, chunk_size, run_as)
	VALUES ('public.secrets', 'sequin_slot', 10, 'sequin')}, 'a backfill of a table it may not read');
like($err, qr/permission denied for table public\.secrets/, 'refused for want of SELECT');
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.backfills (source_table, slot_name, chunk_size, run_as, where_clause)
	VALUES ('public.orders', 'sequin_slot', 10, 'sequin', 'true) OR (true')}, 'a forged injected where_clause');
like($err, qr/invalid backfill condition|syntax error/, 'the where clause is parsed, not pasted');
my $su_bf = $node->safe_psql('postgres', q{INSERT INTO sequin_cdc.backfills (source_table, slot_name, chunk_size, run_as, state)
	VALUES ('public.orders', 'sequin_slot', 10, 'app', 'cancelled') RETURNING id});
$err = as_sequin_fails("UPDATE sequin_cdc.backfills SET where_clause = 'id > 0' WHERE id = $su_bf",
	"another role's backfill");
like($err, qr/backfill \d+ belongs to role app/, 'another role\'s backfill belongs to it');
is($node->safe_psql('postgres', "SELECT count(*) FROM sequin_cdc.backfills WHERE run_as::text <> 'sequin' AND id <> $su_bf"),
	'0', 'no backfills row of the role names another role');

# a sink of another owner
my $fsink = as_sequin(qq{INSERT INTO sequin_cdc.sinks (name, url, change_table, cursor_seq, owner, state)
	VALUES ('forged', 'http://127.0.0.1:1/', 'sequin.order_changes', 0, '$su', 'paused') RETURNING id});
is($node->safe_psql('postgres', "SELECT owner::text FROM sequin_cdc.sinks WHERE id = $fsink"), 'sequin',
	'a sinks row inserted with owner => superuser belongs to the role itself');
$err = as_sequin_fails("UPDATE sequin_cdc.sinks SET owner = '$su' WHERE id = $fsink", 'giving a sink to a superuser');
is($node->safe_psql('postgres', "SELECT owner::text FROM sequin_cdc.sinks WHERE id = $fsink"), 'sequin',
	'owner unchanged');
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.sinks (name, url, change_table, cursor_seq, state)
	VALUES ('forged2', 'http://127.0.0.1:1/', 'sequin_cdc.changes', 0, 'paused')},
	'a sink of a change table it may not read');
like($err, qr/permission denied for change table sequin_cdc\.changes/, 'refused for want of SELECT');
as_sequin("DELETE FROM sequin_cdc.sinks WHERE id = $fsink");

# retention rules: a table it may not read, a change table it does not own
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.change_retention (source_table, change_table, actions, slot_name)
	VALUES ('public.secrets', 'sequin.order_changes', '{insert,update,delete}', 'sequin_slot')},
	'a rule row for a table it may not read');
like($err, qr/permission denied for table public\.secrets/, 'refused for want of SELECT');
$err = as_sequin_fails(q{SELECT sequin_cdc.add_change_retention('public.secrets', 'sequin.order_changes', slot => 'sequin_slot')},
	'add_change_retention for a table it may not read');
like($err, qr/permission denied for table public\.secrets/, 'the API says the same');
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.change_retention (source_table, change_table, actions, slot_name)
	VALUES ('public.orders', 'sequin_cdc.changes', '{insert}', 'sequin_slot')},
	'a rule row into a change table it does not own');
like($err, qr/must be owner of change table sequin_cdc\.changes/, 'refused: not its change table');
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.change_tables VALUES ('public.orders', false)},
	'registering a table of another role as a change table');
like($err, qr/must be owner of table public\.orders/, 'refused: not its table');
is($node->safe_psql('postgres', q{SELECT string_agg(source_table::text || '>' || change_table::text, ',')
                                     FROM sequin_cdc.change_retention}),
	'orders>sequin.order_changes', 'the only rule is the one made through the API');
is($node->safe_psql('postgres', q{SELECT string_agg(change_table::text, ',' ORDER BY change_table::text)
                                     FROM sequin_cdc.change_tables}),
	'sequin.order_changes,sequin_cdc.changes', 'no table registered behind the API');

# a policy pointing at a superuser's pg_cron job
my $su_job = $node->safe_psql('postgres', "SELECT cron.schedule('su_job', '0 0 * * *', 'SELECT 1')");
$err = as_sequin_fails("UPDATE sequin_cdc.retention_policies SET jobid = $su_job",
	"a policy row naming a superuser's pg_cron job");
like($err, qr/pg_cron job $su_job is not a job of role sequin/, 'refused: not its job');
is($node->safe_psql('postgres', 'SELECT jobid || job_owner FROM sequin_cdc.retention_policies'),
	"${job}sequin", 'the policy still names its own job');

# a slots row for no slot; a slots row by a role without REPLICATION
$err = as_sequin_fails(q{INSERT INTO sequin_cdc.slots (slot_name, publication) VALUES ('ghost', 'sequin_pub')},
	'a slots row of no replication slot');
like($err, qr/replication slot "ghost" is not a sequin_cdc slot/, 'refused: no such slot');

# ---------------------------------------------------------------------------
# (b) drop_slot without the rights: nothing happens
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE repl_only LOGIN REPLICATION;
	GRANT USAGE ON SCHEMA sequin_cdc TO repl_only;
});
my $pid = SequinNode::worker_pid($node, 'sequin_slot');
my ($rc, $out);
($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.drop_slot('sequin_slot')",
	extra_params => [ '-U', 'repl_only' ]);
isnt($rc, 0, 'drop_slot by a REPLICATION role without rights on sequin_cdc.slots fails');
like($err, qr/permission denied to drop sequin_cdc slot "sequin_slot"/, 'and says why');
is($node->safe_psql('postgres', q{
	SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sequin_slot')::text
	    || (SELECT count(*) FROM sequin_cdc.slots WHERE slot_name = 'sequin_slot')::text
	    || (SELECT count(*) FROM pg_replication_origin WHERE roname = 'sequin_cdc_sequin_slot')::text}),
	'111', 'the slot, its configuration row and its origin all remain');
$node->safe_psql('postgres', "INSERT INTO public.orders VALUES (8, 'new', 80)");
ok(SequinNode::wait_for_capture($node), 'capture goes on');
is(SequinNode::worker_pid($node, 'sequin_slot'), $pid, 'with the same worker');
is(as_sequin("SELECT count(*) FROM sequin.order_changes WHERE record_pk = '8'"), '1', 'the change is there');

# ---------------------------------------------------------------------------
# (c) _sink_backlog of another role's sink
# ---------------------------------------------------------------------------
my $su_sink = $node->safe_psql('postgres', qq{
	BEGIN;
	SELECT sequin_cdc.create_webhook_sink('su_hook', 'http://127.0.0.1:1/', 'sequin.order_changes');
	SELECT sequin_cdc.pause_sink('su_hook');
	COMMIT;
	SELECT sequin_cdc.replay_sink('su_hook', '-infinity');
	SELECT id FROM sequin_cdc.sinks WHERE name = 'su_hook'});
($su_sink) = $su_sink =~ /(\d+)$/;
ok($node->safe_psql('postgres', "SELECT sequin_cdc._sink_backlog($su_sink)") > 0,
	"the superuser's sink has a backlog");
is(as_sequin("SELECT coalesce(sequin_cdc._sink_backlog($su_sink)::text, 'nothing')"), 'nothing',
	"_sink_backlog of another role's sink tells the role nothing");
is(as_sequin("SELECT coalesce(backlog::text, 'nothing') FROM sequin_cdc.pg_stat_sinks WHERE name = 'su_hook'"),
	'nothing', 'nor does pg_stat_sinks');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_proc
	WHERE pronamespace = 'sequin_cdc'::regnamespace AND prosecdef
	  AND NOT (proconfig::text[] @> ARRAY['search_path=pg_catalog, pg_temp'])}),
	'0', 'every SECURITY DEFINER function pins search_path');

# ---------------------------------------------------------------------------
# (e) backfill "where" injections
# ---------------------------------------------------------------------------
my $nbf = $node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.backfills');
$err = as_sequin_fails(q{SELECT sequin_cdc.backfill('public.orders', 'sequin.order_changes', "where" => 'true) OR (true')},
	'where => true) OR (true');
like($err, qr/invalid backfill condition/, 'is not one expression');
$err = as_sequin_fails(q{SELECT sequin_cdc.backfill('public.orders', 'sequin.order_changes',
	"where" => 'id > 0) UNION SELECT 1 FROM pg_authid WHERE (true')}, 'where => ... UNION SELECT ... pg_authid');
like($err, qr/invalid backfill condition/, 'is not one expression either');
$err = as_sequin_fails(q{SELECT sequin_cdc.backfill('public.orders', 'sequin.order_changes',
	"where" => 'id IN (SELECT id FROM public.secrets)')}, 'where => a subquery');
like($err, qr/Subqueries are not allowed/, 'subqueries are refused');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.backfills'), $nbf, 'no backfill was started');

$node->stop;
done_testing();
