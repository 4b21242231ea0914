
# Copyright: sequin_cdc contributors
#
# health() and add_change_retention() under concurrent DDL (issue 11): they
# used to cast table names from pg_publication_tables back to regclass, so a
# table dropped by another session between the two steps made them fail
# with "relation ... does not exist".  They now compare by OID.
#
# pgbench runs, for a few seconds, one client creating and dropping tables
# covered by a FOR ALL TABLES publication, beside clients calling health()
# and add_change_retention()/drop_change_retention().  Every call must
# succeed, and health() must report the worker.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('ddl');
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE src (id bigint PRIMARY KEY, t text);
	CREATE TABLE src_0 (id bigint PRIMARY KEY);
	CREATE TABLE src_1 (id bigint PRIMARY KEY);
	CREATE TABLE src_2 (id bigint PRIMARY KEY);
	CREATE TABLE src_3 (id bigint PRIMARY KEY);
	SELECT sequin_cdc.create_change_table('churn_changes');
	CREATE SCHEMA churn;
	CREATE PUBLICATION all_pub FOR TABLES IN SCHEMA churn, TABLE src, src_0, src_1, src_2, src_3;
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('ddl_slot', 'all_pub')");
$node->safe_psql('postgres', "SELECT sequin_cdc.add_change_retention('src')");
# a rule whose table left the publication: health() looks through every
# table of the publication for it (and says it is not covered).  ALTER
# PUBLICATION ... DROP TABLE is refused while the rule exists (018), so the
# rule is swapped in behind the publication's back, as a superuser may.
$node->safe_psql('postgres', q{
	CREATE TABLE src_out (id bigint PRIMARY KEY);
	UPDATE sequin_cdc.change_retention SET source_table = 'src_out' WHERE source_table = 'src'::regclass;
});
isnt(SequinNode::wait_for_worker($node, 'ddl_slot', timeout => 30), '', 'worker runs');

my $dir = $node->basedir;
my %scripts = (
	'ddl.sql' => "CREATE TABLE IF NOT EXISTS churn.t_:client_id (id bigint PRIMARY KEY);\n"
	  . "DROP TABLE IF EXISTS churn.t_:client_id;\n",
	'health.sql' => "SELECT count(*) FROM sequin_cdc.health();\n",
	'rule.sql' => "SELECT sequin_cdc.drop_change_retention(sequin_cdc.add_change_retention(\n"
	  . "  ('src_' || :client_id)::regclass, 'churn_changes'));\n",
);
for my $f (keys %scripts)
{
	open my $fh, '>', "$dir/$f" or die;
	print $fh $scripts{$f};
	close $fh;
}

my $bindir = $node->config_data('--bindir');
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ "$bindir/pgbench", '-n', '-T', '8', '-c', '4', '-j', '2',
		'-f', "$dir/ddl.sql\@4", '-f', "$dir/health.sql\@3", '-f', "$dir/rule.sql\@1",
		'-r', $node->connstr('postgres') ],
	'>', \$out, '2>', \$err);
my ($processed) = $out =~ /number of transactions actually processed: (\d+)/;
my ($failed) = $out =~ /number of failed transactions: (\d+)/;
$failed //= 0;
my @errors = $err =~ /^.*ERROR:.*$/mg;
note "pgbench: $processed transactions";
diag join("\n", @errors[ 0 .. ($#errors < 4 ? $#errors : 4) ]) if @errors;
ok($ok, 'pgbench finished without a client aborting');
is(scalar(@errors), 0, 'no call failed under concurrent DDL');
cmp_ok($processed // 0, '>', 100, 'many calls were made');

like( $node->safe_psql('postgres',
		q{SELECT string_agg(status || ': ' || detail, E'\n') FROM sequin_cdc.health()}),
	qr/capture worker running, pid \d+/, 'health() reports the worker');

$node->stop;
done_testing();
