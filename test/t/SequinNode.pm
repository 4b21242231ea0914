
# Copyright: sequin_cdc contributors
#
# SequinNode: shared helpers for the sequin_cdc TAP tests.
#
#   use FindBin;
#   use lib $FindBin::RealBin;
#   use SequinNode;
#
#   my $node = SequinNode::new_node('main', 'logical_decoding_work_mem' => '64kB');
#   $node->start;
#
# new_node($name, %extra_conf) returns an initialised (not started)
# PostgreSQL::Test::Cluster configured for sequin_cdc.  %extra_conf adds or
# overrides postgresql.conf settings; a value of undef leaves the setting
# out.  Values are written quoted, so pass them bare ('64kB', 'replica').
#
# output_plugin_libraries is written only when the server knows the setting
# (PostgreSQL 15.19 and later minor releases; older servers refuse to start
# when postgresql.conf names it).
#
# The polling helpers (try_query, poll_until, worker_pid, wait_for_worker,
# wait_for_capture) never die because the server is restarting: they pass the
# query as an argument (no pipe for a dying psql to break) inside eval, and
# retry until their timeout.  start_background starts a load in its own
# process group and stops the whole group when the test ends, however it ends.
# require_extensions skips a test whose extensions the server does not have.

package SequinNode;

use strict;
use warnings;

use IPC::Run;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $has_opl;
my @background;

# The last error of try_query (psql's stderr, or why psql could not run).
our $last_error = '';

# pg_config --$what of the server under test (the one on PATH).
sub pg_config
{
	my ($what) = @_;
	my $v = `pg_config --$what`;
	chomp $v;
	return $v;
}

# Does this server have the output_plugin_libraries setting?
sub has_output_plugin_libraries
{
	return $has_opl if defined $has_opl;
	my $bindir = pg_config('bindir');
	my $out = `"$bindir/postgres" --describe-config 2>/dev/null`;
	$has_opl = ($out =~ /^output_plugin_libraries\t/m) ? 1 : 0;
	return $has_opl;
}

sub new_node
{
	my ($name, %extra) = @_;

	my @order = qw(shared_preload_libraries wal_level max_worker_processes
	  max_replication_slots sequin_cdc.restart_delay restart_after_crash
	  shared_buffers);
	my %conf = (
		shared_preload_libraries => 'sequin_cdc',
		wal_level => 'logical',
		max_worker_processes => '20',
		max_replication_slots => '10',
		'sequin_cdc.restart_delay' => '200ms',
		# the capture tests kill processes and expect crash recovery
		restart_after_crash => 'on',
		# Cluster.pm's 1MB is too small for the bulk tests
		shared_buffers => '16MB',
	);
	if (has_output_plugin_libraries())
	{
		push @order, 'output_plugin_libraries';
		$conf{output_plugin_libraries} = 'pgoutput, test_decoding, sequin_cdc';
	}
	for my $k (sort keys %extra)
	{
		push @order, $k unless exists $conf{$k};
		$conf{$k} = $extra{$k};
	}
	delete $conf{output_plugin_libraries} unless has_output_plugin_libraries();

	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => 'logical');
	my $text = "\n# sequin_cdc test settings\n";
	for my $k (@order)
	{
		next unless defined $conf{$k};
		(my $v = $conf{$k}) =~ s/'/''/g;
		$text .= "$k = '$v'\n";
	}
	$node->append_conf('postgresql.conf', $text);
	return $node;
}

# The usual capture setup in $db: extension, a table "$table" (id bigint
# primary key + columns given as SQL), REPLICA IDENTITY FULL, publication,
# slot, retention rule into sequin_cdc.changes.  Returns the slot's start LSN.
sub setup_capture
{
	my ($node, %p) = @_;
	my $db = $p{db} // 'postgres';
	my $table = $p{table} // 'src';
	my $cols = $p{columns} // 'id bigint PRIMARY KEY, v int, t text';
	my $slot = $p{slot} // 'seq_slot';
	my $pub = $p{publication} // "${slot}_pub";

	$node->safe_psql($db, qq{
		CREATE EXTENSION IF NOT EXISTS sequin_cdc;
		CREATE TABLE $table ($cols);
		ALTER TABLE $table REPLICA IDENTITY FULL;
		SELECT sequin_cdc.create_publication('$pub', ARRAY['$table']::regclass[]);
	});
	my $lsn = $node->safe_psql($db,
		"SELECT sequin_cdc.create_slot('$slot', '$pub')");
	$node->safe_psql($db,
		"SELECT sequin_cdc.add_change_retention('$table', slot => '$slot')");
	return $lsn;
}

# Skip the whole test (plan skip_all, with the reason in the output) unless
# every extension named is installed for the server under test.
sub require_extensions
{
	my @missing = grep { !-f pg_config('sharedir') . "/extension/$_.control" } @_;
	plan skip_all => join(', ', @missing) . ' not installed for this server'
	  if @missing;
	return;
}

# Output of $sql in $db (psql -XAt, last result only), or undef when psql
# failed for any reason (then $SequinNode::last_error says why).  Never dies:
# the query goes as an argument, so a psql that exits because the server is
# restarting cannot break a pipe, and anything else is caught.
sub try_query
{
	my ($node, $db, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(
			[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $sql ],
			'<', \undef, '>', \$out, '2>', \$err);
	};
	$last_error = $ok ? '' : ($@ || $err);
	return undef unless $ok;
	chomp $out;
	return $out;
}

# Poll $sql in $db every 50 ms until it returns $p{expected} (default 't'),
# through server restarts; true on success, false (with a diag) after
# $p{timeout} seconds (default 180).
sub poll_until
{
	my ($node, $db, $sql, %p) = @_;
	my $expected = $p{expected} // 't';
	my $deadline = time() + ($p{timeout} // 180);
	my $got;
	while (time() < $deadline)
	{
		$got = try_query($node, $db, $sql);
		return 1 if defined $got && $got eq $expected;
		usleep(50_000);
	}
	diag("poll_until timed out: $sql\nexpected: $expected\nlast: "
		  . ($got // "(failed) $last_error"));
	return 0;
}

# Call $cond every 20 ms until it returns true (then true), or fail the
# test "timed out waiting: $what" after $timeout seconds (default 60).
sub wait_until
{
	my ($what, $cond, $timeout) = @_;
	my $deadline = time() + ($timeout // 60);
	while (time() < $deadline)
	{
		return 1 if $cond->();
		usleep(20_000);
	}
	fail("timed out waiting: $what");
	return 0;
}

# pid of the capture worker of $slot, or '' when none runs (or the server
# is restarting).
sub worker_pid
{
	my ($node, $slot, $db) = @_;
	$db //= 'postgres';
	my $out = try_query($node, $db,
		"SELECT pid FROM sequin_cdc.pg_stat_capture WHERE slot_name = '$slot' AND pid IS NOT NULL"
	);
	return $out // '';
}

# Wait (up to $timeout seconds) for a capture worker of $slot whose pid is
# not $old_pid; returns its pid, or '' on timeout.
sub wait_for_worker
{
	my ($node, $slot, %p) = @_;
	my $db = $p{db} // 'postgres';
	my $old = $p{old_pid} // '';
	my $deadline = time() + ($p{timeout} // 60);
	while (time() < $deadline)
	{
		my $pid = worker_pid($node, $slot, $db);
		return $pid if $pid ne '' && $pid ne $old;
		usleep(50_000);
	}
	return '';
}

# sequin_cdc.wait_for_capture() in $db; true when everything committed so far
# is in the change tables.  Retries while the server cannot be reached (for
# up to $timeout + 60 s); dies if the call keeps failing.
sub wait_for_capture
{
	my ($node, $db, $timeout) = @_;
	$db //= 'postgres';
	$timeout //= '60s';
	my $deadline = time() + 60 + ($timeout =~ /^(\d+)s$/ ? $1 : 60);
	while (1)
	{
		my $out = try_query($node, $db,
			"SELECT sequin_cdc.wait_for_capture(timeout => '$timeout')");
		return $out eq 't' if defined $out;
		die "wait_for_capture failed: $last_error" if time() > $deadline;
		usleep(100_000);
	}
}

# IPC::Run::start($cmd, @rest) with $cmd in a process group of its own, which
# is killed (TERM, then KILL) when the test ends if it still runs: a test
# that dies does not leave its load behind.  Returns the harness.
sub start_background
{
	my ($cmd, @rest) = @_;
	my $h = IPC::Run::start($cmd, init => sub { POSIX::setpgid(0, 0) }, @rest);
	push @background, $h->{KIDS}[0]{PID};
	return $h;
}

END
{
	local $?;
	for my $pgid (@background)
	{
		next unless kill(0, -$pgid);
		kill('TERM', -$pgid);
		for (1 .. 20)
		{
			last unless kill(0, -$pgid);
			usleep(50_000);
		}
		kill('KILL', -$pgid);
	}
}

1;
