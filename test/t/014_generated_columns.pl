
# Copyright: sequin_cdc contributors
#
# Generated columns, on every version:
#  - a REPLICA IDENTITY FULL table with a stored generated column, in a
#    publication made by create_publication(), takes UPDATE and DELETE
#    (PostgreSQL 18 refuses them unless the publication publishes stored
#    generated columns: create_publication sets publish_generated_columns);
#    its records equal to_jsonb(row), the generated column included.
# On PostgreSQL 18 and later (virtual generated columns):
#  - a virtual generated column is not stored, so not in the WAL: records
#    (decoded and backfilled alike) are to_jsonb(row) without it, as
#    pgoutput leaves it out; the stored one is still there.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('gen');
$node->start;
my $virtual = $node->pg_version->major >= 18;

# The change rows of $table, once capture has caught up: "action:record ...".
sub records_of
{
	my ($table) = @_;
	ok(SequinNode::wait_for_capture($node), "capture caught up ($table)");
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(action || ':' || record::text, ' ' ORDER BY seq)
		  FROM sequin_cdc.changes WHERE source_table_name = '$table'});
}

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE st (id bigint PRIMARY KEY, a int,
	                 s bigint GENERATED ALWAYS AS (a::bigint * 3) STORED);
	ALTER TABLE st REPLICA IDENTITY FULL;
});
$node->safe_psql('postgres', q{
	CREATE TABLE vt (id bigint PRIMARY KEY, a int,
	                 v bigint GENERATED ALWAYS AS (a::bigint * 2) VIRTUAL,
	                 s bigint GENERATED ALWAYS AS (a::bigint * 3) STORED);
	INSERT INTO vt (id, a) SELECT i, i FROM generate_series(1, 3) i;
}) if $virtual;
$node->safe_psql('postgres', 'SELECT sequin_cdc.create_publication(\'pub\')');
$node->safe_psql('postgres', q{SELECT sequin_cdc.create_slot('s', 'pub')});
$node->safe_psql('postgres', q{
	SELECT sequin_cdc.add_change_retention('st', slot => 's');
});

my ($rc, $out, $err) = $node->psql('postgres', q{
	INSERT INTO st (id, a) VALUES (1, 10), (2, 20);
	UPDATE st SET a = 11 WHERE id = 1;
	DELETE FROM st WHERE id = 2;
});
is($rc, 0, 'UPDATE and DELETE of a REPLICA IDENTITY FULL table with a stored generated column work')
  or diag $err;
is(records_of('st'),
	'insert:{"a": 10, "s": 30, "id": 1} insert:{"a": 20, "s": 60, "id": 2} '
	  . 'update:{"a": 11, "s": 33, "id": 1} delete:{"a": 20, "s": 60, "id": 2}',
	'records of the stored generated column table, generated column included');
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM sequin_cdc.changes c JOIN st ON st.id = c.record_pk::bigint
		 WHERE c.action = 'update' AND c.record <> to_jsonb(st)}),
	'0', 'the update record equals to_jsonb(row)');

if ($virtual)
{
	$node->safe_psql('postgres', q{
		SELECT sequin_cdc.add_change_retention('vt', slot => 's');
	});
	my $bf = $node->safe_psql('postgres', q{SELECT sequin_cdc.backfill('vt')});
	ok(SequinNode::poll_until($node, 'postgres',
			"SELECT state FROM sequin_cdc.pg_stat_backfills WHERE id = $bf",
			expected => 'completed'),
		'backfill of the table with a virtual generated column completed');
	$node->safe_psql('postgres', q{
		INSERT INTO vt (id, a) VALUES (4, 4);
		UPDATE vt SET a = 5 WHERE id = 4;
		DELETE FROM vt WHERE id = 1;
	});
	is(records_of('vt'),
		'read:{"a": 1, "s": 3, "id": 1} read:{"a": 2, "s": 6, "id": 2} read:{"a": 3, "s": 9, "id": 3} '
		  . 'insert:{"a": 4, "s": 12, "id": 4} update:{"a": 5, "s": 15, "id": 4} delete:{"id": 1}',
		'records leave the virtual generated column out (backfill and decoding alike)');
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM sequin_cdc.changes c JOIN vt ON vt.id = c.record_pk::bigint
			 WHERE c.source_table_name = 'vt' AND c.action IN ('read', 'update')
			   AND c.record <> to_jsonb(vt) - 'v'
			   AND (c.action = 'update' OR vt.id <> 4)}),
		'0', 'each record is to_jsonb(row) without the virtual column');
}

unlike(slurp_file($node->logfile), qr/TRAP:/, 'no assertion failure in the server log');

$node->stop;
done_testing();
