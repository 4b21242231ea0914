
# Copyright: sequin_cdc contributors
#
# The launcher keeps exactly one capture worker per sequin_cdc slot:
#  - create_slot starts the worker at once (latency measured, < 1 s);
#  - a worker stopped by SIGTERM is restarted (new pid) and capture goes on;
#  - a worker killed by SIGKILL (crash restart of the whole server) is back;
#  - after the launcher itself is restarted (SIGTERM), the running worker is
#    adopted: no duplicate worker fights it for the slot and its origin, and
#    pg_stat_capture keeps showing it;
#  - after a server restart the worker is back and captures;
#  - two databases, each with the extension and its own slot, are served at
#    the same time, each into its own change table; drop_slot from one
#    database does not drop the other database's slot;
#  - a configuration row whose slot is missing (as after a restore) is
#    removed by drop_slot, as health() advises;
#  - drop_slot stops the worker and leaves no slot, no pg_stat_capture row;
#    a slot created again under the same name gets a worker again.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = SequinNode::new_node('lifecycle');
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE src (id bigint PRIMARY KEY, v text);
	ALTER TABLE src REPLICA IDENTITY FULL;
	SELECT sequin_cdc.create_publication('pub', ARRAY['src']::regclass[]);
});

# ---------------------------------------------------------------------------
# Worker start latency after create_slot: one session creates the slot and
# then polls pg_stat_capture, so the measurement has no psql start-up in it.
# ---------------------------------------------------------------------------
my $bg = $node->background_psql('postgres');
$bg->query_safe("SELECT sequin_cdc.create_slot('s1', 'pub')");
my $t0 = time();
my $pid1 = '';
while (time() - $t0 < 2.0)
{
	$pid1 = $bg->query_safe(
		"SELECT pid FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's1' AND pid IS NOT NULL"
	);
	last if $pid1 ne '';
	usleep(5_000);
}
my $latency = time() - $t0;
$bg->quit;
isnt($pid1, '', 'capture worker appears in pg_stat_capture after create_slot');
diag(sprintf('worker start latency after create_slot: %.0f ms', $latency * 1000));
cmp_ok($latency, '<', 1.0, 'capture worker started within 1 s of create_slot');

$node->safe_psql('postgres', "SELECT sequin_cdc.add_change_retention('src')");

my $next_id = 1;

# Insert one row and check that it is captured exactly once.
sub insert_and_check
{
	my ($what) = @_;
	my $id = $next_id++;
	$node->safe_psql('postgres', "INSERT INTO src VALUES ($id, 'row $id')");
	ok(SequinNode::wait_for_capture($node, 'postgres', '30s'),
		"$what: wait_for_capture");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM sequin_cdc.changes WHERE record_pk = '$id' AND action = 'insert'"
		),
		'1',
		"$what: row $id captured once");
}

insert_and_check('first worker');
is( $node->safe_psql('postgres',
		"SELECT state FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's1'"),
	'streaming',
	'worker state is streaming');

# ---------------------------------------------------------------------------
# SIGTERM: the worker exits, the launcher starts another one.
# ---------------------------------------------------------------------------
ok(kill('TERM', $pid1), "sent SIGTERM to worker $pid1");
my $t1 = time();
my $pid2 = SequinNode::wait_for_worker($node, 's1', old_pid => $pid1, timeout => 10);
isnt($pid2, '', 'a new worker runs after SIGTERM');
diag(sprintf('worker back %.0f ms after SIGTERM (restart_delay 200ms)',
		(time() - $t1) * 1000));
cmp_ok(time() - $t1, '<', 5, 'worker restarted within 5 s of SIGTERM');
insert_and_check('after SIGTERM');

# ---------------------------------------------------------------------------
# SIGKILL: the postmaster restarts everything (crash recovery); the launcher
# comes back and starts the worker again.
# ---------------------------------------------------------------------------
my $log_offset = -s $node->logfile;
ok(kill('KILL', $pid2), "sent SIGKILL to worker $pid2");
$t1 = time();
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
my $pid3 = SequinNode::wait_for_worker($node, 's1', old_pid => $pid2, timeout => 30);
isnt($pid3, '', 'a new worker runs after SIGKILL and crash recovery');
diag(sprintf('worker back %.0f ms after SIGKILL', (time() - $t1) * 1000));
insert_and_check('after SIGKILL');

# ---------------------------------------------------------------------------
# Launcher restart (SIGTERM; the postmaster starts it again after 1 s): the
# new launcher must adopt the running worker, not start a second one for the
# same slot.
# ---------------------------------------------------------------------------
# The launcher has no database connection, so it is not in pg_stat_activity:
# look for the postmaster's child with its process title.
sub launcher_pid
{
	my $postmaster = $node->{_pid};
	for my $stat (glob('/proc/[0-9]*/stat'))
	{
		open(my $fh, '<', $stat) or next;
		my $line = <$fh>;
		close $fh;
		next unless defined $line && $line =~ /^(\d+) \(.*\) \S (\d+) /;
		my ($pid, $ppid) = ($1, $2);
		next unless $ppid == $postmaster;
		open(my $ch, '<', "/proc/$pid/cmdline") or next;
		my $cmd = <$ch> // '';
		close $ch;
		return $pid if $cmd =~ /sequin_cdc launcher/;
	}
	return '';
}
my $launcher = launcher_pid();
isnt($launcher, '', "launcher $launcher runs");
$log_offset = -s $node->logfile;
ok(kill('TERM', $launcher), "sent SIGTERM to the launcher $launcher");
my $new_launcher = '';
for (1 .. 100)
{
	$new_launcher = launcher_pid();
	last if $new_launcher ne '' && $new_launcher ne $launcher;
	usleep(100_000);
}
ok($new_launcher ne '' && $new_launcher ne $launcher,
	"a new launcher $new_launcher runs");
sleep(2);    # several launcher passes, restart_delay is 200ms
my $pid_after = SequinNode::worker_pid($node, 's1');
isnt($pid_after, '',
	'pg_stat_capture shows a running worker after the launcher restart');
ok($pid_after ne '' && kill(0, $pid_after), 'that process exists');
is( $node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		   WHERE backend_type = 'sequin_cdc capture'}),
	$pid_after,
	'it is the one capture worker of the slot');
$pid3 = $pid_after if $pid_after ne '';
is( $node->safe_psql('postgres',
		q{SELECT errors FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's1'}),
	'0',
	'no failed worker starts after the launcher restart');
my $dup_errors = () = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset)
  =~ /ERROR: .*(?:is active for PID|is already active for PID)/g;
is($dup_errors, 0, 'no duplicate worker tried to take the slot or its origin');
insert_and_check('after launcher restart');

# ---------------------------------------------------------------------------
# Server restart
# ---------------------------------------------------------------------------
$node->restart(mode => 'fast');
my $pid4 = SequinNode::wait_for_worker($node, 's1', timeout => 30);
isnt($pid4, '', 'worker runs after a server restart');
isnt($pid4, $pid3, 'it is a new process');
insert_and_check('after restart');

# ---------------------------------------------------------------------------
# A second database with the extension and its own slot, served at the same
# time; each database's rows land in its own change table only.
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db2');
SequinNode::setup_capture($node, db => 'db2', table => 'src2',
	columns => 'id bigint PRIMARY KEY, v text', slot => 's2');
my $pid_db2 = SequinNode::wait_for_worker($node, 's2', db => 'db2', timeout => 10);
isnt($pid_db2, '', 'worker of the second database runs');
my $pid_db1 = SequinNode::worker_pid($node, 's1');
isnt($pid_db1, '', 'worker of the first database still runs');
isnt($pid_db1, $pid_db2, 'two distinct workers');
is( $node->safe_psql('db2',
		"SELECT database FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's2'"),
	'db2',
	'pg_stat_capture shows the database of the second slot');

$node->safe_psql('postgres',
	"INSERT INTO src SELECT g, 'db1' FROM generate_series(1001, 1100) g");
$node->safe_psql('db2',
	"INSERT INTO src2 SELECT g, 'db2' FROM generate_series(2001, 2050) g");
ok(SequinNode::wait_for_capture($node, 'postgres'), 'db1 captured');
ok(SequinNode::wait_for_capture($node, 'db2'), 'db2 captured');
is( $node->safe_psql('postgres',
		q{SELECT count(*), min(record_pk::int), max(record_pk::int)
		  FROM sequin_cdc.changes WHERE record_pk::int > 1000}),
	'100|1001|1100',
	'db1 change table has exactly the db1 rows');
is( $node->safe_psql('db2',
		q{SELECT count(*), min(record_pk::int), max(record_pk::int),
		         count(DISTINCT source_table_name)
		  FROM sequin_cdc.changes}),
	'50|2001|2050|1',
	'db2 change table has exactly the db2 rows');
is( $node->safe_psql('db2',
		q{SELECT count(*) FROM sequin_cdc.changes c, sequin_cdc.database_identity d
		  WHERE c.source_database_id <> d.id}),
	'0',
	'db2 rows carry db2 source_database_id');

# drop_slot of another database's slot must not drop it behind that
# database's back: its configuration (sequin_cdc.slots there) would be left
# pointing at a missing slot.
my ($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.drop_slot('s2')");
isnt($rc, 0, 'drop_slot of a slot of another database fails');
is( $node->safe_psql('db2',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's2'}),
	'1',
	'the other database\'s slot still exists');
isnt(SequinNode::wait_for_worker($node, 's2', db => 'db2', timeout => 2), '',
	'the other database\'s worker still runs');
# (if it was dropped, create it again so that the checks below stand alone)
if ($node->safe_psql('db2',
		q{SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's2'}) eq '0')
{
	$node->safe_psql('db2', "SELECT sequin_cdc.create_slot('s2', 's2_pub')");
	SequinNode::wait_for_worker($node, 's2', db => 'db2', timeout => 10);
}

# A configuration row without its slot (as a restore leaves it: pg_dump
# keeps sequin_cdc.slots, not replication slots): health() says to remove it
# with drop_slot(), and drop_slot() must then do that.
$node->safe_psql('postgres',
	"INSERT INTO sequin_cdc.slots (slot_name, publication) VALUES ('ghost', 'pub')");
is( $node->safe_psql('postgres',
		q{SELECT status FROM sequin_cdc.health() WHERE check_name = 'slot ghost'}),
	'error',
	'health() reports the configured slot that does not exist');
($rc, $out, $err) = $node->psql('postgres', "SELECT sequin_cdc.drop_slot('ghost')");
is($rc, 0, 'drop_slot removes the configuration of a missing slot, as health() advises')
  or diag($err);
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM sequin_cdc.slots WHERE slot_name = 'ghost'}),
	'0',
	'no configuration row left for the missing slot');
$node->safe_psql('postgres', "DELETE FROM sequin_cdc.slots WHERE slot_name = 'ghost'");

# ---------------------------------------------------------------------------
# drop_slot stops the worker
# ---------------------------------------------------------------------------
$pid_db1 = SequinNode::worker_pid($node, 's1');
isnt($pid_db1, '', "worker $pid_db1 runs before drop_slot");
$node->safe_psql('postgres', "SELECT sequin_cdc.drop_slot('s1')");
my $gone = 0;
for (1 .. 100)
{
	if (!kill(0, $pid_db1)) { $gone = 1; last; }
	usleep(50_000);
}
ok($gone, "worker process $pid_db1 is gone after drop_slot");
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's1'"),
	'0',
	'no replication slot s1');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's1'"),
	'0',
	'no pg_stat_capture row for s1');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE application_name = 'sequin_cdc capture s1'}),
	'0',
	'no capture backend for s1 in pg_stat_activity');
# the launcher must not start one again
sleep(1);
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE application_name = 'sequin_cdc capture s1'}),
	'0',
	'and none is started again');
isnt(SequinNode::worker_pid($node, 's2', 'db2'), '',
	'the other database\'s worker keeps running');

# The same slot name again: a worker starts and captures new rows only.
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('s1', 'pub')");
my $pid5 = SequinNode::wait_for_worker($node, 's1', timeout => 5);
isnt($pid5, '', 'a slot created again under the same name gets a worker');
insert_and_check('re-created slot');
is( $node->safe_psql('postgres',
		q{SELECT count(*), count(DISTINCT record_pk) FROM sequin_cdc.changes}),
	($next_id - 1 + 100) . '|' . ($next_id - 1 + 100),
	'no change captured twice across drop and re-create');

# A worker still waiting for its configuration (its row gone, as a restore
# can leave it) when drop_slot drops its slot and gives its shared entry
# back: held with SIGSTOP until drop_slot has returned, it must still exit
# (it used to wait forever and hold the entry, so that the next slot given
# that entry got no worker).
$node->safe_psql('postgres', "DELETE FROM sequin_cdc.slots WHERE slot_name = 's1'");
kill 'TERM', $pid5;
ok( SequinNode::poll_until($node, 'postgres',
		q{SELECT state || (pid IS NOT NULL) FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's1'},
		expected => 'waiting for configurationtrue', timeout => 30),
	'the restarted worker waits for the missing configuration row');
my $waiting = SequinNode::worker_pid($node, 's1');
kill 'STOP', $waiting;
$node->safe_psql('postgres', "SELECT sequin_cdc.drop_slot('s1')");
kill 'CONT', $waiting;
SequinNode::wait_until("waiting worker $waiting exits after its slot was dropped",
	sub { !kill(0, $waiting) }, 10);
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('s3', 'pub')");
isnt(SequinNode::wait_for_worker($node, 's3', timeout => 10), '',
	'the next slot gets a worker');
ok( SequinNode::poll_until($node, 'postgres',
		q{SELECT state FROM sequin_cdc.pg_stat_capture WHERE slot_name = 's3'},
		expected => 'streaming', timeout => 10),
	'and it streams');

$node->stop;
done_testing();
