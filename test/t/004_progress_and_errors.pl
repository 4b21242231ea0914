
# Copyright: sequin_cdc contributors
#
# (a) Progress on idle tables (DESIGN.md invariant 6): heavy writes to a
#     table outside the publication and to another database move the slot's
#     confirmed_flush_lsn past them, and, after checkpoints, its restart_lsn:
#     WAL is not retained forever.
# (b) wal_level = replica: create_slot says what is wrong and how to fix it.
# (c) without shared_preload_libraries: CREATE EXTENSION refuses, with a hint.
# (d) output_plugin_libraries without sequin_cdc (only on servers that have
#     the setting): create_slot fails with SQLSTATE 55000 and a hint naming
#     the setting, health() reports it, and following the hint works.
# (e) no free replication slot: create_slot says so.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

# ---------------------------------------------------------------------------
# (a) idle progress
# ---------------------------------------------------------------------------
{
	my $node = SequinNode::new_node('progress', log_statement => 'ddl');
	$node->start;
	SequinNode::setup_capture($node, table => 'a', slot => 'p_slot');
	$node->safe_psql('postgres', q{
		CREATE TABLE b (id bigint PRIMARY KEY, t text);
		ALTER TABLE b REPLICA IDENTITY FULL;
		CREATE DATABASE other;
	});
	$node->safe_psql('other', 'CREATE TABLE o (id bigint PRIMARY KEY, t text)');
	isnt(SequinNode::wait_for_worker($node, 'p_slot', timeout => 10), '', 'worker runs');

	$node->safe_psql('postgres', "INSERT INTO a VALUES (1, 1, 'one')");
	ok(SequinNode::wait_for_capture($node), 'row of a captured');

	my $before = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my $restart_before = $node->safe_psql('postgres',
		"SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'p_slot'");

	$node->safe_psql('postgres',
		q{INSERT INTO b SELECT g, repeat('x', 100) FROM generate_series(1, 100000) g});
	$node->safe_psql('postgres', q{UPDATE b SET t = 'y' WHERE id % 10 = 0});
	$node->safe_psql('other',
		q{INSERT INTO o SELECT g, repeat('z', 100) FROM generate_series(1, 100000) g});
	my $after = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
	my $written = $node->safe_psql('postgres', "SELECT pg_wal_lsn_diff('$after', '$before')");
	note "wrote $written bytes of WAL outside the publication";
	cmp_ok($written, '>', 10_000_000, 'a lot of unrelated WAL was written');

	ok( $node->poll_query_until('postgres',
			"SELECT confirmed_flush_lsn >= '$after' FROM pg_replication_slots WHERE slot_name = 'p_slot'"
		),
		'confirmed_flush_lsn advances past unrelated writes');
	is( $node->safe_psql('postgres',
			q{SELECT lag_bytes < 1000000 FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'p_slot'}),
		't',
		'pg_stat_capture shows no lag');

	# restart_lsn moves once the decoder has seen a running-xacts record
	# (logged by CHECKPOINT) and confirmed past it.
	my $moved = 0;
	my $deadline = time() + 60;
	while (time() < $deadline)
	{
		$node->safe_psql('postgres',
			"CHECKPOINT; INSERT INTO b SELECT g, 'more' FROM generate_series(200001, 200100) g ON CONFLICT (id) DO UPDATE SET t = excluded.t"
		);
		if ($node->safe_psql('postgres',
				"SELECT restart_lsn > '$after' FROM pg_replication_slots WHERE slot_name = 'p_slot'"
			) eq 't')
		{
			$moved = 1;
			last;
		}
		usleep(300_000);
	}
	ok($moved, "restart_lsn advances past the unrelated writes (was $restart_before)");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.changes'),
		'1', 'nothing of b or the other database was captured');
	$node->stop;
}

# ---------------------------------------------------------------------------
# (b) wal_level = replica
# ---------------------------------------------------------------------------
{
	my $node = SequinNode::new_node('replica', wal_level => 'replica');
	$node->start;
	$node->safe_psql('postgres', q{
		CREATE EXTENSION sequin_cdc;
		CREATE TABLE a (id int PRIMARY KEY);
		SET client_min_messages = error;
		SELECT sequin_cdc.create_publication('pub', ARRAY['a']::regclass[]);
	});
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT sequin_cdc.create_slot('s', 'pub')");
	isnt($rc, 0, 'wal_level = replica: create_slot fails');
	like($err, qr/ERROR:  logical decoding requires wal_level = logical/,
		'wal_level = replica: the error says what is needed');
	like($err, qr/DETAIL:  The server runs with wal_level = replica\./,
		'wal_level = replica: the detail says what is set');
	like($err,
		qr/HINT:  Set wal_level = logical in postgresql.conf and restart the server\./,
		'wal_level = replica: the hint says how to fix it');
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FROM pg_replication_slots}),
		'0', 'wal_level = replica: no slot left behind');
	is( $node->safe_psql('postgres',
			q{SELECT status FROM sequin_cdc.health() WHERE check_name = 'wal_level'}),
		'error', 'wal_level = replica: health() reports wal_level');
	$node->stop;
}

# ---------------------------------------------------------------------------
# (c) without shared_preload_libraries
# ---------------------------------------------------------------------------
{
	my $node = SequinNode::new_node('no_preload', shared_preload_libraries => '');
	$node->start;
	my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION sequin_cdc');
	isnt($rc, 0, 'no preload: CREATE EXTENSION fails');
	like($err, qr/ERROR:  sequin_cdc must be loaded via shared_preload_libraries/,
		'no preload: the error says why');
	like($err, qr/HINT:  Add sequin_cdc to shared_preload_libraries in postgresql\.conf/,
		'no preload: the hint says how to fix it');
	is( $node->safe_psql('postgres',
			q{SELECT count(*) FROM pg_extension WHERE extname = 'sequin_cdc'}),
		'0', 'no preload: extension not created');
	$node->stop;
}

# ---------------------------------------------------------------------------
# (d) output_plugin_libraries without sequin_cdc
# ---------------------------------------------------------------------------
SKIP:
{
	skip 'server has no output_plugin_libraries setting', 9
	  unless SequinNode::has_output_plugin_libraries();

	my $node = SequinNode::new_node('opl',
		output_plugin_libraries => 'pgoutput, test_decoding');
	$node->start;
	$node->safe_psql('postgres', q{
		CREATE EXTENSION sequin_cdc;
		CREATE TABLE a (id int PRIMARY KEY, v text);
		ALTER TABLE a REPLICA IDENTITY FULL;
		SELECT sequin_cdc.create_publication('pub', ARRAY['a']::regclass[]);
	});
	my ($rc, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT sequin_cdc.create_slot('s', 'pub')");
	isnt($rc, 0, 'output_plugin_libraries: create_slot fails');
	like($err, qr/ERROR:  55000: /, 'output_plugin_libraries: SQLSTATE 55000');
	like($err, qr/HINT:  .*output_plugin_libraries/,
		'output_plugin_libraries: the hint names the setting');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'),
		'0', 'output_plugin_libraries: no slot left behind');
	is( $node->safe_psql('postgres',
			q{SELECT status FROM sequin_cdc.health() WHERE check_name = 'output_plugin_libraries'}),
		'error', 'output_plugin_libraries: health() reports it');

	# follow the hint: add sequin_cdc and reload
	$node->append_conf('postgresql.conf',
		"output_plugin_libraries = 'pgoutput, test_decoding, sequin_cdc'");
	$node->reload;
	ok( $node->poll_query_until('postgres',
			q{SELECT status = 'ok' FROM sequin_cdc.health() WHERE check_name = 'output_plugin_libraries'}
		),
		'output_plugin_libraries: health() ok after following the hint');
	($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.create_slot('s', 'pub')");
	is($rc, 0, 'output_plugin_libraries: create_slot works after reload') or diag($err);
	$node->safe_psql('postgres', "SELECT sequin_cdc.add_change_retention('a')");
	$node->safe_psql('postgres', "INSERT INTO a VALUES (1, 'x')");
	ok(SequinNode::wait_for_capture($node), 'output_plugin_libraries: capture runs');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.changes'),
		'1', 'output_plugin_libraries: row captured');
	$node->stop;
}

# ---------------------------------------------------------------------------
# (e) no free replication slot
# ---------------------------------------------------------------------------
{
	my $node = SequinNode::new_node('one_slot', max_replication_slots => '1');
	$node->start;
	$node->safe_psql('postgres', q{
		CREATE EXTENSION sequin_cdc;
		CREATE TABLE a (id int PRIMARY KEY);
		SELECT sequin_cdc.create_publication('pub', ARRAY['a']::regclass[]);
		SELECT pg_create_physical_replication_slot('taken');
	});
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT sequin_cdc.create_slot('s', 'pub')");
	isnt($rc, 0, 'no free slot: create_slot fails');
	like($err, qr/ERROR:  all replication slots are in use/,
		'no free slot: the error says so');
	like($err, qr/HINT:  .*max_replication_slots/,
		'no free slot: the hint names max_replication_slots');
	is( $node->safe_psql('postgres',
			q{SELECT string_agg(slot_name, ',') FROM pg_replication_slots}),
		'taken', 'no free slot: nothing changed');
	$node->stop;
}

done_testing();
