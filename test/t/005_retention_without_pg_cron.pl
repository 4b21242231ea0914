
# Copyright: sequin_cdc contributors
#
# Retention policies on a server where pg_cron is not preloaded (the
# pg_regress cluster always preloads it, so this case needs its own node):
#  - set_retention_policy() refuses with "pg_cron is not loaded", errcode
#    55000, and a hint with the postgresql.conf lines (the current
#    shared_preload_libraries plus pg_cron, cron.database_name = this
#    database); nothing is recorded;
#  - schedule => NULL records the policy without a job, and run_retention()
#    applies it by hand.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('no_cron');
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	SELECT sequin_cdc.create_change_table('public.chg');
	INSERT INTO chg (seq, source_database_id, source_table_oid, source_table_schema,
	                 source_table_name, record_pk, record, action, committed_at)
	SELECT k, gen_random_uuid(), 1, 'public', 'src', k::text, '{}', 'insert',
	       now() - make_interval(days => k, hours => 12)
	  FROM generate_series(0, 9) k;
});

my ($rc, $out, $err) = $node->psql('postgres',
	q{\set VERBOSITY verbose
	  SELECT sequin_cdc.set_retention_policy('chg', '5 days');});
isnt($rc, 0, 'set_retention_policy fails without pg_cron');
like($err, qr/ERROR:  55000: pg_cron is not loaded/, 'error says pg_cron is not loaded, errcode 55000');
like($err, qr/HINT:  .*shared_preload_libraries = 'sequin_cdc,pg_cron'/,
	'hint gives the shared_preload_libraries line');
like($err, qr/HINT:  .*cron\.database_name = 'postgres'/, 'hint gives the cron.database_name line');
like($err, qr/HINT:  .*CREATE EXTENSION pg_cron/, 'hint says to create the extension');
is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.retention_policies'),
	'0', 'nothing recorded');

# without a job
is($node->safe_psql('postgres',
		q{SELECT sequin_cdc.set_retention_policy('chg', '5 days', schedule => NULL) IS NULL}),
	't', 'schedule => NULL records a policy without a job');
is($node->safe_psql('postgres',
		q{SELECT job_state FROM sequin_cdc.pg_stat_retention}),
	'none', 'pg_stat_retention works without pg_cron');
is($node->safe_psql('postgres', q{CALL sequin_cdc.run_retention('chg', 2)}),
	'5', 'run_retention deletes the 5 rows older than 5 days');
is($node->safe_psql('postgres',
		q{SELECT count(*) FILTER (WHERE committed_at >= now() - interval '5 days') || '/' || count(*) FROM chg}),
	'5/5', 'the rows of the last 5 days are kept');
$node->safe_psql('postgres', q{SELECT sequin_cdc.drop_retention_policy('chg')});
is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.retention_policies'),
	'0', 'dropped');

$node->stop;
done_testing();
