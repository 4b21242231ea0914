
# Copyright: sequin_cdc contributors
#
# FOR ALL TABLES EXCEPT (TABLE ...) (PostgreSQL 19 and later; skipped on
# older servers): the decoder captures what the publication publishes.
#  - a table in the EXCEPT list is not captured, though it has a rule;
#    the other tables are;
#  - a partitioned table in the EXCEPT list excludes its partitions too
#    (only a root can be listed, as pgoutput decides);
#  - add_change_retention refuses a table the publication excepts;
#  - ALTER PUBLICATION ... SET ALL TABLES (no EXCEPT) takes effect at its
#    commit: the table is captured from then on.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('except');
if ($node->pg_version->major < 19)
{
	plan skip_all => 'FOR ALL TABLES EXCEPT needs PostgreSQL 19 or later (server is '
	  . $node->pg_version . ')';
}
$node->start;

# All change rows, once capture has caught up: "table:action:v,...".
sub captured
{
	ok(SequinNode::wait_for_capture($node), 'capture caught up');
	return $node->safe_psql('postgres', q{
		SELECT string_agg(source_table_name || ':' || action || ':' || (record->>'v'), ',' ORDER BY seq)
		  FROM sequin_cdc.changes});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE kept (id bigint PRIMARY KEY, v text);
	CREATE TABLE skipped (id bigint PRIMARY KEY, v text);
	CREATE TABLE parted (id bigint PRIMARY KEY, v text) PARTITION BY RANGE (id);
	CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000);
	CREATE TABLE later (id bigint PRIMARY KEY, v text);
	SELECT sequin_cdc.create_publication('pub');
});
$node->safe_psql('postgres', q{SELECT sequin_cdc.create_slot('s', 'pub')});
$node->safe_psql('postgres', q{
	SELECT sequin_cdc.add_change_retention('kept', slot => 's');
	SELECT sequin_cdc.add_change_retention('skipped', slot => 's');
	SELECT sequin_cdc.add_change_retention('parted', slot => 's');
	ALTER PUBLICATION pub SET ALL TABLES EXCEPT (TABLE skipped, parted, later);
});

my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT sequin_cdc.add_change_retention('later', slot => 's')});
isnt($rc, 0, 'add_change_retention refuses a table the publication excepts');
like($err, qr/table "public\.later" is not in publication "pub"/, 'and says why');

$node->safe_psql('postgres', q{
	INSERT INTO kept VALUES (1, 'a');
	INSERT INTO skipped VALUES (1, 'b');
	INSERT INTO parted VALUES (1, 'c');
	UPDATE kept SET v = 'a2';
	DELETE FROM skipped;
});
is(captured(),
	'kept:insert:a,kept:update:a2',
	'only the table outside the EXCEPT list is captured (not the excepted table, nor the excepted partitioned table)');

# Dropping the EXCEPT list: captured from that commit on.
$node->safe_psql('postgres', q{ALTER PUBLICATION pub SET ALL TABLES});
$node->safe_psql('postgres', q{
	INSERT INTO skipped VALUES (2, 'd');
	INSERT INTO parted VALUES (2, 'e');
	INSERT INTO kept VALUES (2, 'f');
});
is(captured(),
	'kept:insert:a,kept:update:a2,skipped:insert:d,parted:insert:e,kept:insert:f',
	'without EXCEPT every table with a rule is captured, the partition under its root');

my $log = slurp_file($node->logfile);
unlike($log, qr/TRAP:/, 'no assertion failure in the server log');

$node->stop;
done_testing();
