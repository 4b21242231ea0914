
# Copyright: sequin_cdc contributors
#
# What newer servers give, each part skipped (with the reason) on servers
# without it:
#  17+: a failover slot (create_slot(..., failover => true)) is reported ok by
#       health() once synchronized_standby_slots names a standby's physical
#       slot (the warning while it is empty, and the refusal below 17, are in
#       the pg_regress test failover_slots);
#  18+: a slot invalidated by idle_replication_slot_timeout (its worker was
#       not running for longer) is reported by health() as an error naming the
#       setting, and by the capture worker's error.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

# restart_delay 1h: a worker that stopped stays stopped (see the 18 part)
my $node = SequinNode::new_node('newer', 'sequin_cdc.restart_delay' => '1h');
if ($node->pg_version < 17)
{
	plan skip_all => 'failover slots and synchronized_standby_slots need PostgreSQL 17 or later (this server: '
	  . $node->pg_version . ')';
}
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE src (id bigint PRIMARY KEY, t text);
	ALTER TABLE src REPLICA IDENTITY FULL;
	SELECT sequin_cdc.create_publication('pub', ARRAY['src']::regclass[]);
});

# --- 17+: a failover slot with synchronized_standby_slots set
$node->safe_psql('postgres', q{SELECT pg_create_physical_replication_slot('standby_phys')});
$node->safe_psql('postgres', q{ALTER SYSTEM SET synchronized_standby_slots = 'standby_phys'});
$node->reload;
ok(SequinNode::poll_until($node, 'postgres',
		q{SELECT current_setting('synchronized_standby_slots') = 'standby_phys'}, timeout => 30),
	'synchronized_standby_slots is set');
$node->safe_psql('postgres', q{SELECT sequin_cdc.create_slot('fo_slot', 'pub', failover => true)});
is($node->safe_psql('postgres', q{SELECT failover FROM pg_replication_slots WHERE slot_name = 'fo_slot'}),
	't', 'create_slot(failover => true) makes a failover slot');
isnt(SequinNode::wait_for_worker($node, 'fo_slot', timeout => 60), '', 'its capture worker runs');
is($node->safe_psql('postgres',
		q{SELECT status || ': ' || detail FROM sequin_cdc.health() WHERE check_name = 'failover fo_slot'}),
	'ok: failover slot; synchronized_standby_slots = standby_phys (the standby keeps its copy in sync when it sets sync_replication_slots = on)',
	'health(): failover slot ok with synchronized_standby_slots');
$node->safe_psql('postgres', q{SELECT sequin_cdc.add_change_retention('src', slot => 'fo_slot')});
$node->safe_psql('postgres', q{INSERT INTO src VALUES (1, 'a')});
ok(SequinNode::wait_for_capture($node), 'wait_for_capture');
is($node->safe_psql('postgres', q{SELECT string_agg(action || record_pk, ',') FROM sequin_cdc.changes}),
	'insert1', 'a failover slot captures');
$node->safe_psql('postgres', q{SELECT sequin_cdc.drop_slot('fo_slot')});
$node->safe_psql('postgres', q{ALTER SYSTEM RESET synchronized_standby_slots});
$node->reload;

# --- 18+: idle_replication_slot_timeout
SKIP:
{
	skip 'idle_replication_slot_timeout is new in PostgreSQL 18', 6 if $node->pg_version < 18;

	$node->safe_psql('postgres', q{SELECT sequin_cdc.create_slot('idle_slot', 'pub')});
	my $pid = SequinNode::wait_for_worker($node, 'idle_slot', timeout => 60);
	isnt($pid, '', 'capture worker of idle_slot runs');

	# The worker stops (and, restart_delay being 1h, stays stopped): the slot
	# is unused from now on, and invalidated at the next checkpoint after 1s.
	$node->safe_psql('postgres', qq{
		ALTER SYSTEM SET idle_replication_slot_timeout = '1s';
		SELECT pg_reload_conf();
		SELECT pg_terminate_backend($pid);
	});
	ok(SequinNode::poll_until($node, 'postgres', q{
			SELECT active = false AND now() - inactive_since > interval '2s'
			  FROM pg_replication_slots WHERE slot_name = 'idle_slot'}, timeout => 60),
		'idle_slot unused for longer than idle_replication_slot_timeout');
	ok(SequinNode::poll_until($node, 'postgres', q{
			CHECKPOINT;
			SELECT invalidation_reason = 'idle_timeout' FROM pg_replication_slots WHERE slot_name = 'idle_slot'},
			timeout => 60),
		'the checkpoint invalidates it (idle_timeout)');
	like($node->safe_psql('postgres',
			q{SELECT status || ': ' || detail FROM sequin_cdc.health() WHERE check_name = 'slot idle_slot'}),
		qr/^error: the slot was invalidated \(invalidation_reason = idle_timeout\): it stayed unused longer than idle_replication_slot_timeout = 1s .*raise idle_replication_slot_timeout/,
		'health(): the slot is an error naming idle_replication_slot_timeout');

	# After a restart with a short restart_delay: when the launcher starts a
	# worker for the slot, the worker stops with an error that says what
	# happened and what to do.  (A launcher that starts no worker for an
	# invalidated slot leaves the report to health(), above.)
	my $offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', "sequin_cdc.restart_delay = '200ms'\n");
	$node->restart;
	my $msg = qr/replication slot "idle_slot" was invalidated by idle_replication_slot_timeout/;
	my $deadline = time() + 20;
	sleep(1) until slurp_file($node->logfile, $offset) =~ $msg || time() > $deadline;
	my $log = slurp_file($node->logfile, $offset);
	SKIP:
	{
		skip 'the launcher started no capture worker for the invalidated slot', 2
		  unless $log =~ /idle_slot/;
		like($log, $msg, 'the capture worker says the slot was invalidated by idle_replication_slot_timeout');
		like($log, qr/HINT:  Raise idle_replication_slot_timeout/, 'with a hint naming the setting');
	}
}

$node->stop;
done_testing();
