
# Copyright: sequin_cdc contributors
#
# DDL on the objects capture depends on is refused or carried out, never
# silent (src/ddl_guard.c, sql/src/57_ddl_guards.sql), and DROP EXTENSION
# leaves nothing behind:
#  - refused with SQLSTATE 2BP01 and a hint naming the call to make first,
#    the object still there and capture going on after each: DROP
#    PUBLICATION and RENAME of a slot's publication; ALTER PUBLICATION ...
#    DROP TABLE / SET TABLE without a retained table / DROP TABLES IN
#    SCHEMA / SET (publish) without an action a rule keeps; DROP TABLE of a
#    change table rules write into (also through DROP OWNED and DROP SCHEMA
#    ... CASCADE);
#  - allowed: SET TABLE that keeps the retained table (its row filter
#    changed), dropping a change table together with the only tables whose
#    rules write into it;
#  - dropping a source table (DROP TABLE, DROP OWNED, DROP SCHEMA CASCADE)
#    removes its rules in the same transaction, with a NOTICE: no rule is
#    left for a dropped OID; health() names a rule left by an older
#    version with the call that drops it (never "ADD TABLE <OID>");
#  - DROP EXTENSION (also CASCADE, and DROP SCHEMA sequin_cdc CASCADE) is
#    refused while slots, sinks, retention policies or an unregistered slot
#    of our plugin exist, naming each with the call that removes it; once
#    they are removed it succeeds and leaves no replication slot, origin,
#    pg_cron job (when pg_cron is installed) or worker; CREATE EXTENSION
#    again captures.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $have_cron = -f SequinNode::pg_config('sharedir') . '/extension/pg_cron.control'
  && -f SequinNode::pg_config('pkglibdir') . '/pg_cron.so';

my $node = SequinNode::new_node('ddl',
	$have_cron
	? (shared_preload_libraries => 'sequin_cdc,pg_cron', 'cron.database_name' => 'postgres')
	: ());
$node->start;

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Run $sql expecting an error: returns its stderr (verbose, so with SQLSTATE).
sub refused
{
	my ($sql, $what) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($rc, 0, "$what: refused");
	return $err;
}

# Capture still flows: a new row of src reaches sequin_cdc.changes.
my $next_id = 1000;
my ($rc, $out, $notice);
sub capture_goes_on
{
	my ($what) = @_;
	$next_id++;
	sql("INSERT INTO src VALUES ($next_id, 'x')");
	SequinNode::wait_for_capture($node, 'postgres');
	is(sql("SELECT count(*) FROM sequin_cdc.changes WHERE record_pk = '$next_id'"),
		'1', "$what: capture goes on");
	return;
}

sql(q{CREATE EXTENSION pg_cron}) if $have_cron;
sql(q{
	CREATE EXTENSION sequin_cdc;
	CREATE ROLE bob;
	CREATE SCHEMA sch;
	CREATE SCHEMA sch2;
	CREATE TABLE src (id int PRIMARY KEY, v text);
	CREATE TABLE src2 (id int PRIMARY KEY, v text);
	CREATE TABLE gone (id int PRIMARY KEY);
	CREATE TABLE bsrc (id int PRIMARY KEY);
	ALTER TABLE bsrc OWNER TO bob;
	CREATE TABLE sch.st (id int PRIMARY KEY);
	CREATE TABLE sch2.a (id int PRIMARY KEY);
	CREATE TABLE src4 (id int PRIMARY KEY);
	ALTER TABLE src REPLICA IDENTITY FULL;
	ALTER TABLE src2 REPLICA IDENTITY FULL;
	SELECT sequin_cdc.create_publication('pub',
		ARRAY['src', 'src2', 'gone', 'bsrc', 'sch2.a', 'src4']::regclass[]);
	SELECT sequin_cdc.create_publication('spub', schemas => ARRAY['sch']::name[]);
	SELECT sequin_cdc.create_change_table('public.ct');
	SELECT sequin_cdc.create_change_table('public.ct_bob');
	ALTER TABLE ct_bob OWNER TO bob;
	SELECT sequin_cdc.create_change_table('sch2.cct');
	SELECT sequin_cdc.create_change_table('public.ct_s');
});
sql(q{SELECT sequin_cdc.create_slot('s1', 'pub')});
sql(q{SELECT sequin_cdc.create_slot('s2', 'spub')});
my $r_src = sql(q{SELECT sequin_cdc.add_change_retention('src', slot => 's1')});
my $r_src2 = sql(q{SELECT sequin_cdc.add_change_retention('src2', 'public.ct', slot => 's1')});
my $r_gone = sql(q{SELECT sequin_cdc.add_change_retention('gone', slot => 's1')});
my $r_bsrc = sql(q{SELECT sequin_cdc.add_change_retention('bsrc', 'public.ct_bob', slot => 's1')});
my $r_a = sql(q{SELECT sequin_cdc.add_change_retention('sch2.a', slot => 's1')});
my $r_src4 = sql(q{SELECT sequin_cdc.add_change_retention('src4', 'sch2.cct', slot => 's1')});
my $r_st = sql(q{SELECT sequin_cdc.add_change_retention('sch.st', 'public.ct_s', slot => 's2')});
capture_goes_on('before any DDL');

# ---------------------------------------------------------------------
# the publication of a slot
# ---------------------------------------------------------------------
my $err = refused('DROP PUBLICATION pub', 'DROP PUBLICATION of a slot');
like($err, qr/ERROR:  2BP01: publication "pub" is captured by sequin_cdc slot "s1"/, 'says which slot, SQLSTATE 2BP01');
like($err, qr/HINT:  Drop the slot first with SELECT sequin_cdc\.drop_slot\('s1'\);/, 'hint: drop_slot');
is(sql(q{SELECT count(*) FROM pg_publication WHERE pubname = 'pub'}), '1', 'the publication is still there');

$err = refused('ALTER PUBLICATION pub RENAME TO pub_new', 'RENAME of a slot publication');
like($err, qr/2BP01: publication "pub" is captured by sequin_cdc slot "s1"/, 'rename refused too');
is(sql(q{SELECT count(*) FROM pg_publication WHERE pubname = 'pub'}), '1', 'the publication keeps its name');

sql(q{GRANT CREATE ON DATABASE postgres TO bob; ALTER PUBLICATION pub OWNER TO bob});
$err = refused('DROP OWNED BY bob', 'DROP OWNED of the publication owner');
like($err, qr/2BP01: publication "pub" is captured by sequin_cdc slot "s1"/, 'DROP OWNED is refused too');
is(sql(q{SELECT count(*) FROM pg_publication WHERE pubname = 'pub'}), '1', 'the publication is still there');
sql(q{ALTER PUBLICATION pub OWNER TO CURRENT_USER});
capture_goes_on('after the refused publication drops');

$err = refused('ALTER PUBLICATION pub DROP TABLE src', 'removing a retained table');
like($err, qr/ERROR:  2BP01: table public\.src would no longer be in publication "pub" of sequin_cdc slot "s1"/,
	'says which table, publication and slot');
like($err, qr/HINT:  Remove the rule first with SELECT sequin_cdc\.drop_change_retention\($r_src\);/,
	'hint: drop_change_retention of the rule');
is(sql(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pub' AND tablename = 'src'}),
	'1', 'src is still published');

$err = refused(q{ALTER PUBLICATION pub SET TABLE src2, gone, bsrc, sch2.a, src4},
	'SET TABLE leaving a retained table out');
like($err, qr/2BP01: table public\.src would no longer be in publication "pub"/, 'SET TABLE refused');

sql(q{ALTER PUBLICATION pub SET TABLE src WHERE (id > 0), src2, gone, bsrc, sch2.a, src4});
pass('SET TABLE that keeps every retained table (a row filter changed) is allowed');
sql(q{ALTER PUBLICATION pub SET TABLE src, src2, gone, bsrc, sch2.a, src4});

$err = refused(q{ALTER PUBLICATION pub SET (publish = 'insert, delete')}, 'publish without update');
like($err, qr/ERROR:  2BP01: publication "pub" would no longer publish update changes/, 'names the action');
like($err, qr/HINT:  Keep update in the publish option, or remove the rule first with SELECT sequin_cdc\.drop_change_retention\(\d+\);/,
	'hint: keep it or drop the rule');
is(sql(q{SELECT pubupdate FROM pg_publication WHERE pubname = 'pub'}), 't', 'still publishes updates');
sql(q{ALTER PUBLICATION pub SET (publish = 'insert, update, delete')});
pass('publish dropping only truncate is allowed');

$err = refused('ALTER PUBLICATION spub DROP TABLES IN SCHEMA sch', 'removing the schema of a retained table');
like($err, qr/2BP01: table sch\.st would no longer be in publication "spub" of sequin_cdc slot "s2"/,
	'DROP TABLES IN SCHEMA refused');
like($err, qr/drop_change_retention\($r_st\)/, 'hint names the rule');
capture_goes_on('after the refused publication changes');

# ---------------------------------------------------------------------
# change tables
# ---------------------------------------------------------------------
$err = refused('DROP TABLE ct', 'DROP TABLE of a change table rules write into');
like($err, qr/ERROR:  2BP01: cannot drop change table public\.ct because retention rules write into it/,
	'says why');
like($err, qr/HINT:  Remove the rules first: SELECT sequin_cdc\.drop_change_retention\($r_src2\);/,
	'hint: drop_change_retention');
is(sql(q{SELECT to_regclass('public.ct') IS NOT NULL}), 't', 'the change table is still there');

sql(q{SELECT sequin_cdc.create_change_table('public.ct_p');
	SELECT sequin_cdc.set_retention_policy('ct_p', '1 day', schedule => NULL)});
$err = refused('DROP TABLE ct_p', 'DROP TABLE of a change table with a retention policy');
like($err, qr/ERROR:  2BP01: cannot drop change table public\.ct_p because it has a retention policy/, 'says why');
like($err, qr/HINT:  Drop the policy first with SELECT sequin_cdc\.drop_retention_policy\('public\.ct_p'\);/,
	'hint: drop_retention_policy');
sql(q{SELECT sequin_cdc.drop_retention_policy('ct_p')});
my $ct_p_oid = sql(q{SELECT 'ct_p'::regclass::oid});
sql(q{DROP TABLE ct_p});
is(sql(qq{SELECT count(*) FROM sequin_cdc.change_tables WHERE change_table::oid = $ct_p_oid}),
	'0', 'once the policy is gone it drops, and is unregistered');

# a sink only reads a change table: it goes with it
sql(q{SELECT sequin_cdc.create_change_table('public.ct_k');
	SELECT sequin_cdc.create_webhook_sink('k2', 'http://127.0.0.1:9/', 'public.ct_k')});
ok( SequinNode::poll_until($node, 'postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'sequin_cdc sink'}, timeout => 60),
	'the sink has its worker');
($rc, $out, $notice) = $node->psql('postgres', 'DROP TABLE ct_k');
is($rc, 0, 'DROP TABLE of a change table a sink reads succeeds');
like($notice, qr/NOTICE:  sink "k2" of dropped change table public\.ct_k removed/, 'a NOTICE says the sink was removed');
is(sql(q{SELECT count(*) FROM sequin_cdc.sinks WHERE name = 'k2'}), '0', 'the sink is gone');
ok( SequinNode::poll_until($node, 'postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'sequin_cdc sink'}, timeout => 60),
	'its worker stopped');

$err = refused('DROP SCHEMA sch2 CASCADE', 'DROP SCHEMA CASCADE with a change table fed from outside');
like($err, qr/2BP01: cannot drop change table sch2\.cct because retention rules write into it/,
	'DROP SCHEMA CASCADE refused: a rule of public.src4 writes into sch2.cct');
like($err, qr/drop_change_retention\($r_src4\)/, 'hint names that rule');
is(sql(q{SELECT count(*) FROM pg_class WHERE relnamespace = 'sch2'::regnamespace AND relkind = 'r'}),
	'2', 'the schema keeps its tables');
capture_goes_on('after the refused change-table drops');

# rows of src2 go on flowing into ct
sql(q{INSERT INTO src2 VALUES (1, 'y')});
SequinNode::wait_for_capture($node, 'postgres');
is(sql(q{SELECT count(*) FROM ct WHERE source_table_name = 'src2'}), '1', 'ct still receives its changes');

# ---------------------------------------------------------------------
# source tables: their rules go with them
# ---------------------------------------------------------------------
my $gone_oid = sql(q{SELECT 'gone'::regclass::oid});
($rc, $out, $notice) = $node->psql('postgres', 'DROP TABLE gone');
is($rc, 0, 'DROP TABLE of a source table succeeds');
like($notice, qr/NOTICE:  retention rule $r_gone of dropped table public\.gone removed/,
	'a NOTICE says its rule was removed');
is(sql(qq{SELECT count(*) FROM sequin_cdc.change_retention WHERE id = $r_gone OR source_table::oid = $gone_oid}),
	'0', 'no rule is left for the dropped OID');

# A role that may only read bob's table cannot stop bob from dropping it:
# its rule goes with the table.
sql(q{
	CREATE ROLE mallory;
	SELECT sequin_cdc.grant_usage('mallory');
	GRANT CREATE ON SCHEMA public TO mallory;
	CREATE TABLE vt (id int PRIMARY KEY);
	ALTER TABLE vt OWNER TO bob;
	GRANT SELECT ON vt TO mallory;
	ALTER PUBLICATION pub ADD TABLE vt;
});
my ($r_m) = sql(q{SET ROLE mallory;
	SELECT sequin_cdc.create_change_table('public.ct_m');
	SELECT sequin_cdc.add_change_retention('vt', 'public.ct_m', slot => 's1')}) =~ /(\d+)\s*\z/;
like($r_m // '', qr/^\d+$/, "a role with SELECT on bob's table keeps its changes");
($rc, $out, $notice) = $node->psql('postgres', 'SET ROLE bob; DROP TABLE vt');
is($rc, 0, "bob drops his table all the same");
like($notice, qr/retention rule $r_m of dropped table public\.vt removed/, "the other role's rule went with it");

my $ct_bob_oid = sql(q{SELECT 'ct_bob'::regclass::oid});
# DROP OWNED: bob's source table goes (rule removed) together with his
# change table, which only that rule wrote into
($rc, $out, $notice) = $node->psql('postgres', 'DROP OWNED BY bob');
is($rc, 0, 'DROP OWNED BY bob succeeds');
like($notice, qr/retention rule $r_bsrc of dropped table public\.bsrc removed/, 'its rule removed, with a NOTICE');
is(sql(qq{SELECT count(*) FROM sequin_cdc.change_tables WHERE change_table::oid = $ct_bob_oid}),
	'0', 'the dropped change table is unregistered');

# DROP SCHEMA CASCADE once the outside rule is gone: both tables go
sql(qq{SELECT sequin_cdc.drop_change_retention($r_src4)});
($rc, $out, $notice) = $node->psql('postgres', 'DROP SCHEMA sch2 CASCADE');
is($rc, 0, 'DROP SCHEMA CASCADE succeeds once no outside rule writes into its change table');
like($notice, qr/retention rule $r_a of dropped table sch2\.a removed/, 'rule of sch2.a removed, with a NOTICE');
is(sql(q{SELECT count(*) FROM sequin_cdc.change_retention r
        WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.source_table)}),
	'0', 'no rule anywhere points at a dropped table');
is(sql(q{SELECT count(*) FROM sequin_cdc.change_tables t
        WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.change_table)}),
	'0', 'no change table registration points at a dropped table');

# health() on a rule an older version left behind for a dropped table
my $dangling = sql(q{INSERT INTO sequin_cdc.change_retention (source_table, change_table, actions, slot_name)
	VALUES (4000000000::oid::regclass, 'sequin_cdc.changes', '{insert}', 's1') RETURNING id});
my $health = sql(q{SELECT string_agg(check_name || ': ' || status || ': ' || detail, E'\n') FROM sequin_cdc.health()});
like($health, qr/source table of rule $dangling: error: the table with OID 4000000000 no longer exists.*SELECT sequin_cdc\.drop_change_retention\($dangling\);/,
	'health() names the dangling rule and the call that drops it');
unlike($health, qr/ADD TABLE \d+/, 'health() never suggests ADD TABLE <OID>');
sql(qq{SELECT sequin_cdc.drop_change_retention($dangling)});
capture_goes_on('after the source-table drops');

# ---------------------------------------------------------------------
# DROP EXTENSION
# ---------------------------------------------------------------------
sql(q{SELECT sequin_cdc.create_webhook_sink('k', 'http://127.0.0.1:9/')});
my $job;
if ($have_cron)
{
	$job = sql(q{SELECT sequin_cdc.set_retention_policy('sequin_cdc.changes', '1 day')});
	is(sql(qq{SELECT count(*) FROM cron.job WHERE jobid = $job}), '1', 'the retention policy has its pg_cron job');
}
sql(q{SELECT pg_create_logical_replication_slot('stray', 'sequin_cdc')});

for my $sql ('DROP EXTENSION sequin_cdc', 'DROP EXTENSION sequin_cdc CASCADE', 'DROP SCHEMA sequin_cdc CASCADE')
{
	$err = refused($sql, "$sql with slots, sinks and policies");
	like($err, qr/ERROR:  2BP01: cannot drop extension sequin_cdc while slots, sinks or retention policies exist/,
		"$sql: says why");
	like($err, qr/DETAIL:  Slots: s1, s2\. Replication slots of sequin_cdc without configuration: stray\. Sinks: k\./,
		"$sql: names the slots, the unregistered slot and the sink");
	like($err, qr/HINT:  Remove them first: SELECT sequin_cdc\.drop_slot\('s1'\); SELECT sequin_cdc\.drop_slot\('s2'\); SELECT pg_drop_replication_slot\('stray'\); SELECT sequin_cdc\.drop_sink\('k'\);/,
		"$sql: hint gives the calls");
	like($err, qr/SELECT sequin_cdc\.drop_retention_policy\('sequin_cdc\.changes'\);/, "$sql: and the policy's")
	  if $have_cron;
}
is(sql(q{SELECT count(*) FROM pg_extension WHERE extname = 'sequin_cdc'}), '1', 'the extension is still there');
capture_goes_on('after the refused DROP EXTENSION');

# one at a time: still refused while anything is left
sql(q{SELECT sequin_cdc.drop_sink('k'); SELECT sequin_cdc.drop_slot('s2')});
sql(q{SELECT sequin_cdc.drop_retention_policy('sequin_cdc.changes')}) if $have_cron;
$err = refused('DROP EXTENSION sequin_cdc', 'DROP EXTENSION with one slot left');
like($err, qr/DETAIL:  Slots: s1\. Replication slots of sequin_cdc without configuration: stray\. Each holds/,
	'only what is left is named');
sql(q{SELECT sequin_cdc.drop_slot('s1'); SELECT pg_drop_replication_slot('stray')});

($rc, $out, $err) = $node->psql('postgres', 'DROP EXTENSION sequin_cdc');
is($rc, 0, 'DROP EXTENSION succeeds once slots, sinks and policies are removed') or diag $err;
is(sql(q{SELECT count(*) FROM pg_replication_slots}), '0', 'no replication slot left');
is(sql(q{SELECT count(*) FROM pg_replication_origin}), '0', 'no replication origin left');
is(sql(q{SELECT count(*) FROM cron.job}), '0', 'no pg_cron job left') if $have_cron;
ok( SequinNode::poll_until($node, 'postgres',
		q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type IN ('sequin_cdc capture', 'sequin_cdc sink', 'sequin_cdc backfill')},
		timeout => 60),
	'no capture, sink or backfill worker is left');
is(sql(q{SELECT count(*) FROM pg_class WHERE relnamespace = 'sequin_cdc'::regnamespace}),
	'0', 'nothing is left in schema sequin_cdc');
is(sql(q{SELECT count(*) FROM pg_proc WHERE pronamespace = 'sequin_cdc'::regnamespace}),
	'0', 'no function is left in schema sequin_cdc');

# and again
sql(q{CREATE EXTENSION sequin_cdc});
sql(q{SELECT sequin_cdc.create_slot('s1', 'pub')});
sql(q{SELECT sequin_cdc.add_change_retention('src', slot => 's1')});
capture_goes_on('CREATE EXTENSION again');
is(sql(q{SELECT count(*) FROM sequin_cdc.changes}), '1', 'the new extension captures from its creation on');

$node->stop;
done_testing();
