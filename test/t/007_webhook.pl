
# Copyright: sequin_cdc contributors
#
# Webhook sinks against a real HTTP receiver on 127.0.0.1, started by this
# test (test/t/HttpReceiver.pm: it records every request, and answers what
# its mode file says: a status and a delay):
#  - every change arrives exactly once, in seq order, with the sink's
#    headers, an Idempotency-Key and the documented body;
#  - a new change reaches the receiver quickly when the sink is idle
#    (capture wakes the sink at commit);
#  - while the receiver answers 500, nothing is acknowledged, the same batch
#    is retried with the same Idempotency-Key, and after recovery every
#    change arrives once, in order;
#  - while the receiver is down (connection refused), the same; and a dead
#    endpoint of another sink does not slow this one down;
#  - a receiver slower than timeout_ms causes retries, not loss;
#  - replay_sink / replay_sink_from_seq re-send exactly the asked window, in
#    order, under a new Idempotency-Key;
#  - a server restart in the middle of a backlog resumes from the saved
#    cursor (at most the batch in flight is sent twice);
#  - pause_sink stops the worker and delivery, resume_sink goes on; drop_sink
#    stops the worker.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use HttpReceiver;
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

my $dir = PostgreSQL::Test::Utils::tempdir();
my $mode_file = "$dir/mode";
my $log_file = "$dir/requests.log";

# ---------------------------------------------------------------------------
# The receiver (test/t/HttpReceiver.pm): answers what its mode file says
# ---------------------------------------------------------------------------
my $receiver = HttpReceiver->new(log => $log_file, body => 1, mode_file => $mode_file);

sub set_mode { HttpReceiver::set_mode($mode_file, @_); }
sub start_receiver { $receiver->start; }
sub stop_receiver { $receiver->stop; }

# Logged requests: [{t, status, delay, key, auth, ctype, data => [...]}]
sub requests
{
	return map { $_->{data} = decode_json($_->{body})->{data}; $_ } $receiver->requests;
}

# seqs of the requests the sink saw acknowledged (2xx within its 500 ms timeout),
# in arrival order
sub acked_seqs
{
	return map { map { $_->{metadata}{seq} } @{ $_->{data} } }
	  grep { $_->{status} == 200 && $_->{delay} < 0.5 } requests();
}

# ---------------------------------------------------------------------------
# Server, capture, sink
# ---------------------------------------------------------------------------
my $node = SequinNode::new_node('webhook');
$node->start;
SequinNode::setup_capture($node);

set_mode(200, 0);
start_receiver();
my $port = $receiver->port;
my $url = "http://127.0.0.1:$port/hook?token=secret";

my $sink_id = $node->safe_psql('postgres', qq{
	SELECT sequin_cdc.create_webhook_sink('hook', '$url',
		headers => '{"Authorization": "Bearer t0k3n"}', batch_size => 10, timeout_ms => 500)});
ok($sink_id > 0, "sink created (id $sink_id)");

sub sink_stat
{
	my ($col, $name) = @_;
	$name //= 'hook';
	return $node->safe_psql('postgres',
		"SELECT $col FROM sequin_cdc.pg_stat_sinks WHERE name = '$name'");
}

sub wait_until { return SequinNode::wait_until(@_); }

wait_until('sink worker', sub { sink_stat('worker_pid') ne '' });
is(sink_stat('endpoint'), "http://127.0.0.1:$port/hook",
	'pg_stat_sinks shows the endpoint without its query');

my $next_id = 1;

# Insert n rows in transactions of per_txn rows.
sub insert_rows
{
	my ($n, $per_txn) = @_;
	$per_txn //= 1;
	my $sql = '';
	while ($n > 0)
	{
		my $k = $n < $per_txn ? $n : $per_txn;
		my $last = $next_id + $k - 1;
		$sql .= "INSERT INTO src SELECT g, g % 7, 'row ' || g FROM generate_series($next_id, $last) g;\n";
		$next_id += $k;
		$n -= $k;
	}
	$node->safe_psql('postgres', $sql);
}

sub all_seqs
{
	ok(SequinNode::wait_for_capture($node), 'capture caught up');
	return split /\n/, $node->safe_psql('postgres',
		'SELECT seq FROM sequin_cdc.changes ORDER BY seq');
}

# Every seq of the change table was acknowledged, once each (or, when
# retries of timed-out requests may repeat a batch, at least once with
# first arrivals in order), and every request was in seq order.
sub check_delivery
{
	my ($what, %p) = @_;
	my @want = all_seqs();
	wait_until("$what: all changes acknowledged",
		sub { my %got = map { $_ => 1 } acked_seqs(); !grep { !$got{$_} } @want },
		60);
	my @got = acked_seqs();
	if ($p{duplicates_allowed})
	{
		my (%seen, @first);
		for (@got) { push @first, $_ unless $seen{$_}++ }
		is_deeply(\@first, \@want, "$what: every change arrived, first arrivals in order");
		cmp_ok(scalar(@got) - scalar(@first), '<=', $p{duplicates_allowed},
			"$what: at most $p{duplicates_allowed} changes sent twice");
	}
	else
	{
		is_deeply(\@got, \@want, "$what: every change arrived once, in order");
	}
	my $unordered = grep {
		my @s = map { $_->{metadata}{seq} } @{ $_->{data} };
		grep { $s[$_] <= $s[ $_ - 1 ] } 1 .. $#s
	} requests();
	is($unordered, 0, "$what: each request is in seq order");
	wait_until("$what: backlog 0", sub { sink_stat('backlog') eq '0' });
}

# ---------------------------------------------------------------------------
# Latency of an idle sink: commit -> receiver
# ---------------------------------------------------------------------------
{
	my $bg = $node->background_psql('postgres');
	my @lat;
	for my $i (1 .. 5)
	{
		usleep(300_000);	# idle
		my $id = $next_id++;
		my $before = scalar(requests());
		$bg->query_safe("INSERT INTO src VALUES ($id, 0, 'latency')");
		my $t0 = time();
		my $deadline = $t0 + 5;
		my $t1;
		while (time() < $deadline)
		{
			my @r = requests();
			if (@r > $before)
			{
				$t1 = $r[-1]{t};
				last;
			}
			usleep(2_000);
		}
		push @lat, defined $t1 ? $t1 - $t0 : 5;
	}
	$bg->quit;
	my @sorted = sort { $a <=> $b } @lat;
	diag(sprintf('idle sink: commit -> receiver latency %s ms (median %.0f ms)',
			join(', ', map { sprintf('%.0f', $_ * 1000) } @lat), $sorted[2] * 1000));
	cmp_ok($sorted[2], '<', 0.3, 'median commit -> receiver latency below 300 ms when idle');
	cmp_ok($sorted[-1], '<', 1.0, 'every change of an idle sink arrives within 1 s');
}

# ---------------------------------------------------------------------------
# Normal operation
# ---------------------------------------------------------------------------
insert_rows(150, 15);
$node->safe_psql('postgres', q{
	UPDATE src SET v = -1, t = 'updated' WHERE id = 10;
	DELETE FROM src WHERE id = 11;
	BEGIN;
	SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', '{"by": "test"}');
	UPDATE src SET v = 42 WHERE id = 12;
	COMMIT;
});
check_delivery('normal operation');
{
	my @r = requests();
	is((grep { $_->{auth} ne 'Bearer t0k3n' } @r), 0, 'every request carries the sink\'s Authorization header');
	is((grep { $_->{ctype} ne 'application/json' } @r), 0, 'every request is application/json');
	is((grep { @{ $_->{data} } > 10 } @r), 0, 'no request has more than batch_size changes');
	my $k = 0;
	for my $req (@r)
	{
		my @s = map { $_->{metadata}{seq} } @{ $req->{data} };
		$k++ if $req->{key} ne "$sink_id-0-$s[0]-$s[-1]";
	}
	is($k, 0, 'Idempotency-Key is <sink id>-<replay epoch>-<first seq>-<last seq>');

	my @all = map { @{ $_->{data} } } @r;
	my ($upd) = grep { $_->{action} eq 'update' && $_->{metadata}{record_pk} eq '10' } @all;
	is_deeply([ $upd->{record}, $upd->{changes} ],
		[ { id => 10, v => -1, t => 'updated' }, { v => 3, t => 'row 10' } ],
		'update: record is the new row, changes the old values');
	my ($del) = grep { $_->{action} eq 'delete' } @all;
	is_deeply($del->{record}, { id => 11, v => 4, t => 'row 11' }, 'delete: record is the old row');
	my $m = $upd->{metadata};
	is($m->{table_schema} . '.' . $m->{table_name}, 'public.src', 'metadata names the table');
	like($m->{commit_timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/,
		'commit_timestamp is ISO 8601 in UTC');
	my $dbid = $node->safe_psql('postgres', 'SELECT id FROM sequin_cdc.database_identity');
	is($m->{database_id}, $dbid, 'metadata.database_id is the source database id');
	like($m->{idempotency_key}, qr/^\Q$dbid\E:\d+:$m->{seq}$/, 'metadata.idempotency_key names the change');
	is_deeply($m->{sink}, { id => $sink_id, name => 'hook' }, 'metadata names the sink');
	my ($ann) = grep { $_->{action} eq 'update' && $_->{metadata}{record_pk} eq '12' } @all;
	is_deeply($ann->{metadata}{transaction_annotations}, { by => 'test' }, 'transaction annotations');
}
is(sink_stat('consecutive_failures'), '0', 'no failures so far');
is(sink_stat('delivered'), scalar(all_seqs()), 'pg_stat_sinks counts every delivered change');

# ---------------------------------------------------------------------------
# A second sink with a dead endpoint does not slow this one down
# ---------------------------------------------------------------------------
{
	my $dead = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp');
	my $dead_port = $dead->sockport;
	close $dead;
	$node->safe_psql('postgres',
		"SELECT sequin_cdc.create_webhook_sink('dead', 'http://127.0.0.1:$dead_port/', timeout_ms => 200)");
	insert_rows(30, 3);
	wait_until('the dead sink fails', sub { sink_stat('consecutive_failures', 'dead') >= 2 });
	like(sink_stat('last_error', 'dead'), qr/connect/i, 'dead sink: last_error says it cannot connect');
	is(sink_stat('last_http_status', 'dead'), '', 'dead sink: no HTTP status');
	check_delivery('next to a dead sink');
	my $bg = $node->background_psql('postgres');
	my $before = scalar(requests());
	$bg->query_safe("INSERT INTO src VALUES (" . $next_id++ . ", 0, 'x')");
	my $t0 = time();
	wait_until('delivery next to a dead sink', sub { scalar(requests()) > $before }, 5);
	my $lat = time() - $t0;
	$bg->quit;
	diag(sprintf('latency next to a dead sink: %.0f ms', $lat * 1000));
	cmp_ok($lat, '<', 1.0, 'a dead sink does not delay another sink');
	$node->safe_psql('postgres', "SELECT sequin_cdc.drop_sink('dead')");
}

# ---------------------------------------------------------------------------
# 500s: retried with backoff, nothing lost, order kept
# ---------------------------------------------------------------------------
{
	set_mode(500, 0);
	my $failed0 = sink_stat('failed_attempts');
	insert_rows(45, 5);
	wait_until('500s are retried', sub { sink_stat('failed_attempts') >= $failed0 + 4 });
	is(sink_stat('last_http_status'), '500', 'last_http_status is 500');
	like(sink_stat('last_error'), qr/^HTTP 500: failing on purpose/, 'last_error has the status and the response');
	my @fails = grep { $_->{status} == 500 } requests();
	my %keys = map { $_->{key} => 1 } @fails;
	is(scalar(keys %keys), 1, 'the same batch (same Idempotency-Key) is retried');
	# delays of 50-100, 100-200, 200-400 ms (100 ms doubling, half random)
	my @gap = map { $fails[$_]{t} - $fails[ $_ - 1 ]{t} } 1 .. 3;
	cmp_ok($gap[0], '>=', 0.04, 'the first retry waits (backoff)');
	cmp_ok($gap[2], '>', $gap[0], 'retries back off exponentially');
	diag(sprintf('500s: retry gaps %s ms', join(', ', map { sprintf('%.0f', $_ * 1000) } @gap)));
	set_mode(200, 0);
	check_delivery('after 500s');
	is(sink_stat('consecutive_failures'), '0', 'consecutive_failures back to 0');
}

# ---------------------------------------------------------------------------
# Receiver down: connection refused, then back
# ---------------------------------------------------------------------------
{
	stop_receiver();
	my $failed0 = sink_stat('failed_attempts');
	insert_rows(40, 4);
	wait_until('connection errors are retried', sub { sink_stat('failed_attempts') >= $failed0 + 3 });
	like(sink_stat('last_error'), qr/connect/i, 'last_error says it cannot connect');
	usleep(1_000_000);
	start_receiver();
	check_delivery('after the receiver was down');
}

# ---------------------------------------------------------------------------
# Slower than timeout_ms (500 ms): retries, not loss
# ---------------------------------------------------------------------------
{
	set_mode(200, 0.8);
	my $failed0 = sink_stat('failed_attempts');
	insert_rows(20, 2);
	wait_until('timeouts are retried', sub { sink_stat('failed_attempts') >= $failed0 + 2 });
	like(sink_stat('last_error'), qr/timed out/i, 'last_error says the request timed out');
	set_mode(200, 0);
	check_delivery('after timeouts');
}

# ---------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------
{
	my @seqs = all_seqs();
	my $n0 = scalar(requests());
	my ($from, $since) = split /\|/, $node->safe_psql('postgres',
		"SELECT seq, committed_at FROM sequin_cdc.changes WHERE seq = (SELECT min(seq) FROM sequin_cdc.changes WHERE committed_at >= (SELECT committed_at FROM sequin_cdc.changes ORDER BY seq OFFSET 100 LIMIT 1))");
	my @window = grep { $_ >= $from } @seqs;
	is($node->safe_psql('postgres', "SELECT sequin_cdc.replay_sink('hook', '$since')"),
		scalar(@window), 'replay_sink returns the number of changes it will send again');
	wait_until('replay delivered', sub {
		my @r = requests();
		my @s = map { map { $_->{metadata}{seq} } @{ $_->{data} } } grep { $_->{status} == 200 } @r[ $n0 .. $#r ];
		@s >= @window });
	my @r = requests();
	my @re = @r[ $n0 .. $#r ];
	is_deeply([ map { map { $_->{metadata}{seq} } @{ $_->{data} } } @re ], \@window,
		'replay_sink re-sent exactly the changes committed since, in order');
	is((grep { $_->{key} !~ /^$sink_id-1-/ } @re), 0, 'replayed requests carry a new Idempotency-Key epoch');

	$n0 = scalar(requests());
	my $from2 = $seqs[-5];
	is($node->safe_psql('postgres', "SELECT sequin_cdc.replay_sink_from_seq('hook', $from2)"),
		'5', 'replay_sink_from_seq returns the number of changes it will send again');
	wait_until('replay from seq delivered', sub { scalar(requests()) > $n0 && sink_stat('backlog') eq '0' });
	usleep(300_000);
	@r = requests();
	is_deeply([ map { map { $_->{metadata}{seq} } @{ $_->{data} } } @r[ $n0 .. $#r ] ],
		[ @seqs[-5 .. -1] ], 'replay_sink_from_seq re-sent exactly the last five changes');
}

# ---------------------------------------------------------------------------
# Server restart in the middle of a backlog
# ---------------------------------------------------------------------------
{
	set_mode(200, 0.03);
	$receiver->clear_log;
	my $cursor0 = sink_stat('cursor_seq');
	insert_rows(400, 400);
	ok(SequinNode::wait_for_capture($node), 'backlog captured');
	wait_until('part of the backlog delivered', sub { sink_stat('cursor_seq') >= $cursor0 + 100 });
	$node->restart;
	set_mode(200, 0);
	wait_until('sink worker back after restart', sub { sink_stat('worker_pid') ne '' }, 30);
	my @want = grep { $_ > $cursor0 } all_seqs();
	wait_until('backlog delivered after restart', sub {
		my %got = map { $_ => 1 } acked_seqs(); !grep { !$got{$_} } @want }, 60);
	my @got = acked_seqs();
	my (%seen, @first);
	for (@got) { push @first, $_ unless $seen{$_}++ }
	is_deeply(\@first, \@want, 'restart: every change arrived, first arrivals in order');
	cmp_ok(scalar(@got) - scalar(@first), '<=', 10,
		'restart: delivery resumed from the saved cursor (at most one batch sent twice)');
	diag(sprintf('restart: %d of %d changes sent twice', scalar(@got) - scalar(@first), scalar(@first)));
}

# ---------------------------------------------------------------------------
# Pause, resume, drop
# ---------------------------------------------------------------------------
{
	my $pid = sink_stat('worker_pid');
	$node->safe_psql('postgres', "SELECT sequin_cdc.pause_sink('hook')");
	wait_until('worker gone after pause', sub { sink_stat('worker_pid') eq '' }, 10);
	is(sink_stat('state'), 'paused', 'state is paused');
	my $n0 = scalar(requests());
	insert_rows(10, 10);
	ok(SequinNode::wait_for_capture($node), 'captured while paused');
	usleep(500_000);
	is(scalar(requests()), $n0, 'nothing is sent while paused');
	is(sink_stat('backlog'), '10', 'the backlog shows the waiting changes');
	$node->safe_psql('postgres', "SELECT sequin_cdc.resume_sink('hook')");
	wait_until('delivered after resume', sub { sink_stat('backlog') eq '0' }, 10);
	isnt(sink_stat('worker_pid'), '', 'a worker runs after resume');

	# a pause, then a resume and a replay in one transaction while the
	# paused worker is still on its way out (held there with SIGSTOP): the
	# replay's wake must not replace the resume's start, or the wake finds
	# the old worker, starts none, and the sink is left with no worker
	my $before = scalar(requests());
	my $last = $node->safe_psql('postgres', "SELECT max(seq) FROM sequin_cdc.changes");
	my $old = sink_stat('worker_pid');
	kill 'STOP', $old;
	$node->safe_psql('postgres', "SELECT sequin_cdc.pause_sink('hook');"
		. " BEGIN; SELECT sequin_cdc.resume_sink('hook');"
		. " SELECT sequin_cdc.replay_sink_from_seq('hook', $last); COMMIT;");
	usleep(300_000);
	kill 'CONT', $old;
	wait_until('a worker runs after pause, then resume + replay',
		sub { sink_stat('worker_pid') ne '' && sink_stat('backlog') eq '0'
			  && scalar(requests()) > $before }, 10);
	is(sink_stat('state'), 'active', 'resume + replay after a pause: the sink is active');
	my @all = requests();
	my @resent = map { map { $_->{metadata}{seq} } @{ $_->{data} } } @all[$before .. $#all];
	ok((grep { $_ == $last } @resent), "the replayed change (seq $last) was sent again by the new worker");

	# pause and resume in one transaction: a worker keeps running
	$node->safe_psql('postgres', "BEGIN; SELECT sequin_cdc.pause_sink('hook'); SELECT sequin_cdc.resume_sink('hook'); COMMIT;");
	usleep(500_000);
	isnt(sink_stat('worker_pid'), '', 'pause + resume in one transaction keeps a worker');

	# a drop that is rolled back leaves the worker alone
	$pid = sink_stat('worker_pid');
	$node->safe_psql('postgres', "BEGIN; SELECT sequin_cdc.drop_sink('hook'); ROLLBACK;");
	usleep(300_000);
	is(sink_stat('worker_pid'), $pid, 'a rolled back drop_sink does not stop the worker');

	$node->safe_psql('postgres', "SELECT sequin_cdc.drop_sink('hook')");
	wait_until('worker exits after drop', sub {
		$node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") eq '0' }, 10);
	is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.sinks'), '0', 'sink row deleted');
}

# ---------------------------------------------------------------------------
# A sink of a role that is not a superuser reads the change table as that
# role: without SELECT it fails (recorded, retried), with it again it goes on
# ---------------------------------------------------------------------------
{
	$node->safe_psql('postgres', q{
		CREATE ROLE regress_app;
		GRANT USAGE ON SCHEMA sequin_cdc TO regress_app;
		GRANT SELECT ON sequin_cdc.change_tables TO regress_app;
		GRANT SELECT, INSERT, UPDATE, DELETE ON sequin_cdc.sinks TO regress_app;
		GRANT USAGE ON SEQUENCE sequin_cdc.sinks_id_seq TO regress_app;
		GRANT SELECT ON sequin_cdc.changes TO regress_app;
	});
	$node->safe_psql('postgres', qq{
		SET ROLE regress_app;
		SELECT sequin_cdc.create_webhook_sink('app_hook', '$url',
			headers => '{"Authorization": "Bearer app"}', batch_size => 50);
	});
	$receiver->clear_log;
	my $from = $node->safe_psql('postgres', 'SELECT max(seq) FROM sequin_cdc.changes');
	wait_until('app sink worker', sub { sink_stat('worker_pid', 'app_hook') ne '' });
	insert_rows(20, 5);
	my @want = grep { $_ > $from } all_seqs();
	wait_until('app sink delivers', sub { sink_stat('backlog', 'app_hook') eq '0' });
	is_deeply([ acked_seqs() ], \@want, 'a sink of a granted role delivers its changes once, in order');
	is((grep { $_->{auth} ne 'Bearer app' } requests()), 0, 'with its own headers');

	$node->safe_psql('postgres', 'REVOKE SELECT ON sequin_cdc.changes FROM regress_app');
	insert_rows(5, 5);
	wait_until('app sink fails without SELECT',
		sub { sink_stat('consecutive_failures', 'app_hook') > 0 });
	like(sink_stat('last_error', 'app_hook'), qr/permission denied for table changes/,
		'without SELECT on the change table the sink reads nothing and says why');
	$node->safe_psql('postgres', 'GRANT SELECT ON sequin_cdc.changes TO regress_app');
	@want = grep { $_ > $from } all_seqs();
	wait_until('app sink delivers again', sub { sink_stat('backlog', 'app_hook') eq '0' }, 60);
	is_deeply([ acked_seqs() ], \@want, 'after the grant, the rest arrives once, in order');
	$node->safe_psql('postgres', "SET ROLE regress_app; SELECT sequin_cdc.drop_sink('app_hook')");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM sequin_cdc.sinks'), '0', 'app sink dropped by its owner');
}

$node->stop;
done_testing();
