
# Copyright: sequin_cdc contributors
#
# ALTER EXTENSION sequin_cdc UPDATE, 0.1.0 -> 0.2.0 -> 0.3.0 -> 0.4.0: a database
# with a slot, a rule and captured changes keeps capturing across each
# update, nothing lost or duplicated, and its sequin_cdc schema is then the
# one a fresh 0.4.0 install makes (functions with their definitions,
# volatility, SECURITY DEFINER, settings and ACLs; tables, views and
# sequences with their ACLs and row security; columns; triggers; view
# definitions; policies; what pg_dump keeps), as are those of 0.1.0 updated
# in one step and of 0.2.0 and 0.3.0 updated. The committed 0.4.0 install script is
# the one its pieces (sql/src) join to.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('upgrade');
$node->start;

$node->safe_psql('postgres', q{
	CREATE DATABASE fresh;
	CREATE DATABASE from_010;
	CREATE DATABASE from_020;
	CREATE DATABASE from_030;
	CREATE EXTENSION sequin_cdc VERSION '0.1.0';
	CREATE TABLE src (id bigint PRIMARY KEY, t text);
	ALTER TABLE src REPLICA IDENTITY FULL;
	SELECT sequin_cdc.create_publication('up_pub', ARRAY['src']::regclass[]);
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('up_slot', 'up_pub')");
$node->safe_psql('postgres', "SELECT sequin_cdc.add_change_retention('src', slot => 'up_slot')");
isnt(SequinNode::wait_for_worker($node, 'up_slot', timeout => 30), '', 'worker runs under 0.1.0');
$node->safe_psql('postgres', "INSERT INTO src SELECT g, 'before' FROM generate_series(1, 10) g");
ok(SequinNode::wait_for_capture($node), 'captured under 0.1.0');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.changes'), '10', '10 changes under 0.1.0');

$node->safe_psql('postgres', "ALTER EXTENSION sequin_cdc UPDATE TO '0.2.0'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'sequin_cdc'"),
	'0.2.0', 'updated to 0.2.0');

$node->safe_psql('postgres', q{
	UPDATE src SET t = 'after' WHERE id <= 3;
	DELETE FROM src WHERE id = 10;
	INSERT INTO src VALUES (11, 'after');
});
ok(SequinNode::wait_for_capture($node), 'captured after the update');
is($node->safe_psql('postgres', q{SELECT string_agg(action || record_pk, ',' ORDER BY seq)
                                    FROM sequin_cdc.changes WHERE seq > 10}),
	'update1,update2,update3,delete10,insert11', 'capture goes on across the update, exactly once');
is($node->safe_psql('postgres', 'SELECT count(DISTINCT seq) = count(*) FROM sequin_cdc.changes'), 't',
	'no duplicate seq');
my $health_query =
  q{SELECT string_agg(check_name || '=' || status, ',' ORDER BY check_name) FROM sequin_cdc.health()};
my $health = $node->safe_psql('postgres', $health_query);
unlike($health, qr/=error/, 'health() after the update: no error');

# 0.2.0 -> 0.3.0 with the worker running
$node->safe_psql('postgres', "ALTER EXTENSION sequin_cdc UPDATE TO '0.3.0'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'sequin_cdc'"),
	'0.3.0', 'updated to 0.3.0');
$node->safe_psql('postgres', q{
	UPDATE src SET t = 'later' WHERE id = 4;
	UPDATE src SET t = 'later' WHERE id = 11;
	DELETE FROM src WHERE id = 1;
	INSERT INTO src VALUES (12, 'later');
});
ok(SequinNode::wait_for_capture($node), 'captured after the update to 0.3.0');
is($node->safe_psql('postgres', q{SELECT string_agg(action || record_pk, ',' ORDER BY seq)
                                    FROM sequin_cdc.changes WHERE seq > 15}),
	'update4,update11,delete1,insert12', 'capture goes on across the second update, exactly once');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT seq) || ' ' || count(DISTINCT (action, record_pk, record))
                                    FROM sequin_cdc.changes}),
	'19 19 19', 'nothing lost or duplicated across both updates');
is($node->safe_psql('postgres', $health_query), $health, 'health() gives the same checks after the update to 0.3.0');

# 0.3.0 -> 0.4.0 with the worker running
$node->safe_psql('postgres', 'ALTER EXTENSION sequin_cdc UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'sequin_cdc'"),
	'0.4.0', 'updated to 0.4.0');
$node->safe_psql('postgres', q{
	UPDATE src SET t = 'last' WHERE id = 5;
	DELETE FROM src WHERE id = 2;
	INSERT INTO src VALUES (13, 'last');
});
ok(SequinNode::wait_for_capture($node), 'captured after the update to 0.4.0');
is($node->safe_psql('postgres', q{SELECT string_agg(action || record_pk, ',' ORDER BY seq)
                                    FROM sequin_cdc.changes WHERE seq > 19}),
	'update5,delete2,insert13', 'capture goes on across the third update, exactly once');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT seq) || ' ' || count(DISTINCT (action, record_pk, record))
                                    FROM sequin_cdc.changes}),
	'22 22 22', 'nothing lost or duplicated across three updates');
unlike($node->safe_psql('postgres', $health_query), qr/=error/, 'health() after the update to 0.4.0: no error');

$node->safe_psql('fresh', 'CREATE EXTENSION sequin_cdc');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'sequin_cdc'"),
	'0.4.0', 'a fresh install is 0.4.0');
$node->safe_psql('from_010', "CREATE EXTENSION sequin_cdc VERSION '0.1.0'; ALTER EXTENSION sequin_cdc UPDATE");
$node->safe_psql('from_030', "CREATE EXTENSION sequin_cdc VERSION '0.3.0'; ALTER EXTENSION sequin_cdc UPDATE");

# a rule whose filter uses a whole-row reference (0.2.0 took it; 0.3.0's
# decoder cannot apply it) stops the update, named, until it is replaced
$node->safe_psql('from_020', q{
	CREATE EXTENSION sequin_cdc VERSION '0.2.0';
	CREATE TABLE wr (id int PRIMARY KEY, tenant text);
	CREATE TABLE ok (id int PRIMARY KEY, tenant text);
	INSERT INTO sequin_cdc.change_retention (source_table, change_table, actions, filter, slot_name)
	VALUES ('ok', 'sequin_cdc.changes', '{insert}', 'tenant = ''a''', 'any_slot'),
	       ('wr', 'sequin_cdc.changes', '{insert}', '(wr).tenant = ''a''', 'any_slot');
});
my ($rc, $out, $err) = $node->psql('from_020', 'ALTER EXTENSION sequin_cdc UPDATE');
like($err, qr/retention rules whose filter uses a whole-row reference or a system column: 2 \(public\.wr: \(wr\)\.tenant = 'a'\)/,
	'0.2.0 -> 0.3.0 stops on a rule with a whole-row filter, and names it (not the good one)');
is($node->safe_psql('from_020', "SELECT extversion FROM pg_extension WHERE extname = 'sequin_cdc'"),
	'0.2.0', 'and leaves 0.2.0 in place');
$node->safe_psql('from_020', q{
	DELETE FROM sequin_cdc.change_retention;
	DROP TABLE wr, ok;
	ALTER EXTENSION sequin_cdc UPDATE;
});

my %catalog = (
	functions => q{
		SELECT p.oid::regprocedure::text, p.prosecdef, p.provolatile, p.proconfig::text,
		       coalesce(p.proacl::text, ''), md5(pg_get_functiondef(p.oid))
		  FROM pg_proc p WHERE p.pronamespace = 'sequin_cdc'::regnamespace ORDER BY 1},
	relations => q{
		SELECT c.relname, c.relkind, coalesce(c.relacl::text, ''), c.relrowsecurity,
		       coalesce(c.reloptions::text, '')
		  FROM pg_class c WHERE c.relnamespace = 'sequin_cdc'::regnamespace ORDER BY 1},
	columns => q{
		SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
		       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
		  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
		  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
		 WHERE c.relnamespace = 'sequin_cdc'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
		 ORDER BY 1, 2},
	triggers => q{
		SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid)
		  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
		 WHERE c.relnamespace = 'sequin_cdc'::regnamespace AND NOT t.tgisinternal ORDER BY 1, 2},
	views => q{
		SELECT c.relname, md5(pg_get_viewdef(c.oid))
		  FROM pg_class c WHERE c.relnamespace = 'sequin_cdc'::regnamespace AND c.relkind = 'v' ORDER BY 1},
	policies => q{
		SELECT tablename, policyname, roles::text, qual, with_check
		  FROM pg_policies WHERE schemaname = 'sequin_cdc' ORDER BY 1, 2},
	comments => q{
		SELECT p.oid::regprocedure::text, coalesce(obj_description(p.oid, 'pg_proc'), '')
		  FROM pg_proc p WHERE p.pronamespace = 'sequin_cdc'::regnamespace
		UNION ALL
		SELECT c.relname, coalesce(obj_description(c.oid, 'pg_class'), '')
		  FROM pg_class c WHERE c.relnamespace = 'sequin_cdc'::regnamespace ORDER BY 1},
	schema_acl => q{SELECT coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'sequin_cdc'},
	config_dump => q{
		SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
		  FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'sequin_cdc'},
);
my %updated = (
	postgres => '0.1.0 -> 0.2.0 -> 0.3.0 -> 0.4.0, capturing',
	from_010 => '0.1.0 -> 0.4.0',
	from_020 => '0.2.0 -> 0.4.0',
	from_030 => '0.3.0 -> 0.4.0');
for my $what (sort keys %catalog)
{
	my $fresh = $node->safe_psql('fresh', $catalog{$what});
	isnt($fresh, '', "$what: listed") unless $what eq 'policies' || $what eq 'schema_acl';
	for my $db (sort keys %updated)
	{
		is($node->safe_psql($db, $catalog{$what}), $fresh, "$what: $updated{$db} equals fresh 0.4.0");
	}
}

# the committed install script is what make joins from the pieces
my $top = "$FindBin::RealBin/../..";
my $joined = join('', map { slurp_file($_) } sort glob("$top/sql/src/*.sql"));
ok($joined eq slurp_file("$top/sql/sequin_cdc--0.4.0.sql"),
	'sql/sequin_cdc--0.4.0.sql is sql/src/*.sql joined (run make and commit it)');

$node->stop;
done_testing();
