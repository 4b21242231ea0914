
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

package SequinNode;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $has_opl;

# Does this server have the output_plugin_libraries setting?
sub has_output_plugin_libraries
{
	return $has_opl if defined $has_opl;
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
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

# pid of the capture worker of $slot, or '' when none runs.  Never dies:
# the server may be restarting.
sub worker_pid
{
	my ($node, $slot, $db) = @_;
	$db //= 'postgres';
	my ($rc, $out) = $node->psql($db,
		"SELECT pid FROM sequin_cdc.pg_stat_capture WHERE slot_name = '$slot' AND pid IS NOT NULL"
	);
	return ($rc == 0 && defined $out) ? $out : '';
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
# is in the change tables.
sub wait_for_capture
{
	my ($node, $db, $timeout) = @_;
	$db //= 'postgres';
	$timeout //= '60s';
	return $node->safe_psql($db,
		"SELECT sequin_cdc.wait_for_capture(timeout => '$timeout')") eq 't';
}

1;
