
# Copyright: sequin_cdc contributors
#
# Kafka sinks against a Kafka protocol peer on 127.0.0.1: librdkafka's mock
# cluster in a process of its own (test/tools/kafka_mock_broker.c, built
# here with -Wall -Wextra -Werror), read back with kcat (read_committed):
#  - every change arrives once, in seq order per key, with its key, the
#    documented value and headers (idempotency_key, action, table, seq), on
#    the topic of its template; pg_stat_sinks counts it;
#  - brokers stopped mid-stream and restarted: nothing lost or repeated;
#  - kill -9 of the sink worker and an immediate shutdown mid-backlog:
#    nothing lost, and a change sent twice (delivery is at-least-once) has
#    the same idempotency_key and value;
#  - replay_sink_from_seq re-sends exactly the window, in order;
#  - a message the brokers can never accept, and a fatal producer error,
#    pause the sink, with the reason in pg_stat_sinks;
#  - bad configuration: errors with errcodes at create time;
#  - a secret property is in no view, no error and no log line;
#  - a role that cannot read a change table cannot make a sink of it, nor
#    use properties that name server files.
# Skipped only when librdkafka's headers or kcat are missing.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(usleep);

my $mock_src = "$FindBin::RealBin/../tools/kafka_mock_broker.c";
plan skip_all => 'librdkafka (librdkafka-dev) is not installed'
  unless -f '/usr/include/librdkafka/rdkafka_mock.h';
plan skip_all => 'kcat is not installed'
  unless system('sh', '-c', 'command -v kcat >/dev/null') == 0;

my $dir = PostgreSQL::Test::Utils::tempdir();

# ---------------------------------------------------------------------------
# The broker: built and started here, stopped by pid
# ---------------------------------------------------------------------------
my $cc = $ENV{CC} // 'cc';
system($cc, '-Wall', '-Wextra', '-Werror', '-o', "$dir/kafka_mock_broker", $mock_src, '-lrdkafka') == 0
  or BAIL_OUT('could not build test/tools/kafka_mock_broker.c');

my $broker_out = "$dir/broker.out";
my $broker = SequinNode::start_background(
	[ "$dir/kafka_mock_broker", '-p', '3', '-t', 'public.src', '-t', 'fixed' ],
	'>', $broker_out, '2>', "$dir/broker.err");
my $broker_pid = $broker->{KIDS}[0]{PID};
SequinNode::wait_until('broker address', sub { -s $broker_out && `cat $broker_out` =~ /\n/ });
my $brokers = `cat $broker_out`;
chomp $brokers;
like($brokers, qr/^127\.0\.0\.1:\d+$/, "mock broker listens on 127.0.0.1 ($brokers)");

sub brokers_down { kill 'USR1', $broker_pid; }
sub brokers_up { kill 'USR2', $broker_pid; }

# Every message of a topic, read_committed: [{partition, offset, key,
# headers => {...}, value => {...}}]
sub messages
{
	my ($topic) = @_;
	my $out = `kcat -C -b $brokers -t $topic -X isolation.level=read_committed -e -J -q 2>/dev/null`;
	my @m;
	for my $line (split /\n/, $out)
	{
		my $j = decode_json($line);
		my %h = @{ $j->{headers} // [] };
		push @m, { partition => $j->{partition}, offset => $j->{offset}, key => $j->{key},
			headers => \%h, raw => $j->{payload}, value => decode_json($j->{payload}) };
	}
	# in the order they were produced per partition
	return sort { $a->{partition} <=> $b->{partition} || $a->{offset} <=> $b->{offset} } @m;
}

# ---------------------------------------------------------------------------
# Server, capture, sink
# ---------------------------------------------------------------------------
my $node = SequinNode::new_node('kafka');
$node->start;
SequinNode::setup_capture($node);

my $sink_id = $node->safe_psql('postgres', qq{
	SELECT sequin_cdc.create_kafka_sink('k', '$brokers', '{schema}.{table}', batch_size => 10)});
ok($sink_id > 0, "kafka sink created (id $sink_id)");

sub sink_stat
{
	my ($col, $name) = @_;
	$name //= 'k';
	return $node->safe_psql('postgres',
		"SELECT $col FROM sequin_cdc.pg_stat_sinks WHERE name = '$name'");
}

sub wait_until { return SequinNode::wait_until(@_); }

wait_until('sink worker', sub { sink_stat('worker_pid') ne '' });
is(sink_stat('endpoint || \' \' || type'), "kafka://$brokers kafka", 'pg_stat_sinks shows the brokers and the type');

my $next_id = 1;

# Insert n rows in transactions of per_txn rows, then update each of them
# twice (the changes of a key must stay in order).
sub insert_rows
{
	my ($n, $per_txn) = @_;
	$per_txn //= 1;
	my $first = $next_id;
	my $sql = '';
	while ($n > 0)
	{
		my $k = $n < $per_txn ? $n : $per_txn;
		my $last = $next_id + $k - 1;
		$sql .= "INSERT INTO src SELECT g, g % 7, 'row ' || g FROM generate_series($next_id, $last) g;\n";
		$next_id += $k;
		$n -= $k;
	}
	$sql .= "UPDATE src SET v = v + 1 WHERE id >= $first;\n" x 2;
	$node->safe_psql('postgres', $sql);
}

sub all_seqs
{
	ok(SequinNode::wait_for_capture($node), 'capture caught up');
	return split /\n/, $node->safe_psql('postgres',
		'SELECT seq FROM sequin_cdc.changes ORDER BY seq');
}

# Every seq of the change table is in the topic: once each, or (when
# duplicates_allowed) at least once, a repeat carrying the same
# idempotency_key and value; per key, first arrivals in seq order.
sub check_delivery
{
	my ($what, %p) = @_;
	my @want = all_seqs();
	my %want = map { $_ => 1 } @want;
	wait_until("$what: every change in Kafka",
		sub { my %got = map { $_->{headers}{seq} => 1 } messages('public.src'); !grep { !$got{$_} } @want },
		90);
	my @m = messages('public.src');
	my (%count, %first, %bykey, $bad_repeat);
	for my $m (@m)
	{
		my $seq = $m->{headers}{seq};
		if ($count{$seq}++)
		{
			$bad_repeat++ if $first{$seq}{raw} ne $m->{raw}
			  || $first{$seq}{headers}{idempotency_key} ne $m->{headers}{idempotency_key};
			next;
		}
		$first{$seq} = $m;
		push @{ $bykey{ $m->{key} } }, $seq;
	}
	my @missing = grep { !$count{$_} } @want;
	is_deeply(\@missing, [], "$what: no change is missing");
	my $dups = grep { $count{$_} > 1 } keys %count;
	if ($p{duplicates_allowed})
	{
		ok(!$bad_repeat, "$what: a change sent twice has the same idempotency_key and value");
		note("$what: $dups changes sent twice");
	}
	else
	{
		is($dups, 0, "$what: no change is repeated");
	}
	my $unordered = grep {
		my @s = @{ $bykey{$_} };
		grep { $s[$_] <= $s[ $_ - 1 ] } 1 .. $#s
	} keys %bykey;
	is($unordered, 0, "$what: the changes of each key are in seq order");
	wait_until("$what: backlog 0", sub { sink_stat('backlog') eq '0' });
	return %count;
}

# ---------------------------------------------------------------------------
# Normal operation: content of the messages
# ---------------------------------------------------------------------------
insert_rows(40, 7);
$node->safe_psql('postgres', q{
	DELETE FROM src WHERE id = 11;
	BEGIN;
	SELECT pg_logical_emit_message(true, 'sequin:transaction_annotations.set', '{"by": "test"}');
	UPDATE src SET t = 'annotated' WHERE id = 12;
	COMMIT;
});
check_delivery('normal');
{
	my @m = messages('public.src');
	my ($row) = $node->safe_psql('postgres', q{
		SELECT seq || '|' || action || '|' || record_pk || '|' || record::text || '|' || changes::text
		  FROM sequin_cdc.changes WHERE record_pk = '12' AND action = 'update'
		 ORDER BY seq DESC LIMIT 1});
	my ($seq, $action, $pk, $record, $changes) = split /\|/, $row;
	my ($m) = grep { $_->{headers}{seq} eq $seq } @m;
	is($m->{key}, '12', 'key: the record\'s primary key');
	is($m->{headers}{action}, 'update', 'header action');
	is($m->{headers}{table}, 'public.src', 'header table');
	my $dbid = $node->safe_psql('postgres', "SELECT source_database_id FROM sequin_cdc.changes WHERE seq = $seq");
	my $ctoid = $node->safe_psql('postgres', "SELECT 'sequin_cdc.changes'::regclass::oid");
	is($m->{headers}{idempotency_key}, "$dbid:$ctoid:$seq", 'header idempotency_key: database:change table:seq');
	is($m->{value}{metadata}{seq}, $seq, 'value: metadata.seq');
	is($m->{value}{metadata}{idempotency_key}, $m->{headers}{idempotency_key}, 'value: metadata.idempotency_key');
	is($m->{value}{action}, 'update', 'value: action');
	is_deeply($m->{value}{record}, decode_json($record), 'value: record');
	is_deeply($m->{value}{changes}, decode_json($changes), 'value: changes');
	is_deeply($m->{value}{metadata}{transaction_annotations}, { by => 'test' }, 'value: annotations');
	is($m->{value}{metadata}{table_schema} . '.' . $m->{value}{metadata}{table_name}, 'public.src', 'value: table');
	is($m->{value}{metadata}{sink}{name}, 'k', 'value: sink name');
	my %parts = map { $_->{partition} => 1 } @m;
	cmp_ok(scalar(keys %parts), '>', 1, 'keys spread over partitions');
	my ($del) = grep { $_->{headers}{action} eq 'delete' } @m;
	is($del->{key}, '11', 'a delete is keyed by the record too');
	my $n = scalar(my @all = all_seqs());
	is(sink_stat('delivered'), $n, "pg_stat_sinks: $n delivered");
	is(sink_stat('cursor_seq'), (all_seqs())[-1], 'pg_stat_sinks: cursor at the last seq');
}

# ---------------------------------------------------------------------------
# Brokers down mid-stream, then up again
# ---------------------------------------------------------------------------
brokers_down();
insert_rows(30, 3);
ok(SequinNode::wait_for_capture($node), 'captured while the brokers are down');
wait_until('the worker waits for the brokers', sub {
	$node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type LIKE 'sequin_cdc sink%' AND query = 'producing a batch'}) eq '1' });
my $in_flight = sink_stat('in_flight');
ok($in_flight > 0 && $in_flight <= sink_stat('backlog'),
	"pg_stat_sinks.in_flight: the batch waiting for the brokers ($in_flight changes, within the backlog)");
usleep(2_000_000);
brokers_up();
check_delivery('brokers down and up');
is(sink_stat('in_flight'), '0', 'pg_stat_sinks.in_flight: 0 once delivered');

# ---------------------------------------------------------------------------
# kill -9 of the sink worker, then an immediate shutdown, mid-backlog
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{SELECT sequin_cdc.pause_sink('k')});
insert_rows(1000, 100);
ok(SequinNode::wait_for_capture($node), 'backlog captured');
my $d0 = sink_stat('delivered');
$node->safe_psql('postgres', q{SELECT sequin_cdc.resume_sink('k')});
wait_until('delivery under way', sub { sink_stat('delivered') > $d0 + 100 && sink_stat('backlog') > 0 });
my $pid = sink_stat('worker_pid');
kill 'KILL', $pid if $pid ne '';
ok(SequinNode::poll_until($node, 'postgres',
		q{SELECT worker_pid IS NOT NULL FROM sequin_cdc.pg_stat_sinks WHERE name = 'k'}),
	'the sink delivers again after kill -9 (server restarted)');
wait_until('delivery under way again', sub {
	my $b = SequinNode::try_query($node, 'postgres', q{SELECT backlog FROM sequin_cdc.pg_stat_sinks WHERE name = 'k'});
	defined $b && $b ne '' && $b < 2900 });
$node->stop('immediate');
$node->start;
check_delivery('kill -9 and immediate shutdown', duplicates_allowed => 1);

# ---------------------------------------------------------------------------
# Replay: the window again, in order
# ---------------------------------------------------------------------------
{
	my %before = map { $_->{headers}{seq} => 1 } messages('public.src');
	my $nbefore = () = messages('public.src');
	my @seqs = all_seqs();
	my $from = $seqs[-20];
	my $n = $node->safe_psql('postgres', qq{SELECT sequin_cdc.replay_sink_from_seq('k', $from)});
	is($n, 20, 'replay_sink_from_seq counts the 20 changes to re-send');
	wait_until('replayed', sub { (() = messages('public.src')) >= $nbefore + 20 });
	my @m = messages('public.src');
	my @new = grep { $_->{offset} >= 0 } @m;
	my %count;
	$count{ $_->{headers}{seq} }++ for @m;
	my @twice = sort { $a <=> $b } grep { $_ >= $from && $count{$_} >= 2 } keys %count;
	is(scalar(@twice), 20, 'every change of the window is in Kafka again');
	is(scalar(@m), $nbefore + 20, 'and nothing else');
}

# ---------------------------------------------------------------------------
# A message the producer can never send pauses the sink, with the reason
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', qq{
	SELECT sequin_cdc.create_kafka_sink('small', '$brokers', 'fixed', key => 'table',
		properties => '{"message.max.bytes": 2000}')});
wait_until('small sink worker', sub { sink_stat('worker_pid', 'small') ne '' });
$node->safe_psql('postgres', q{INSERT INTO src VALUES (100000, 0, repeat('x', 5000))});
ok(SequinNode::poll_until($node, 'postgres',
		q{SELECT state = 'paused' AND last_error LIKE '%too large%' FROM sequin_cdc.pg_stat_sinks WHERE name = 'small'}),
	'a message too large pauses the sink, its error in pg_stat_sinks');
is(sink_stat('cursor_seq < (SELECT max(seq) FROM sequin_cdc.changes)', 'small'), 't',
	'the cursor stays before the change that could not be sent');
$node->safe_psql('postgres', q{SELECT sequin_cdc.drop_sink('small')});

# ---------------------------------------------------------------------------
# A fatal producer error (the brokers refuse its producer id) pauses the
# sink, with the reason in pg_stat_sinks
# ---------------------------------------------------------------------------
kill 'HUP', $broker_pid;
wait_until('broker armed', sub { `cat $dir/broker.err` =~ /the next InitProducerId fails/ });
$node->safe_psql('postgres', qq{
	SELECT sequin_cdc.create_kafka_sink('fenced', '$brokers', 'fixed', key => 'none')});
$node->safe_psql('postgres', q{INSERT INTO src VALUES (100003, 0, 'fatal')});
ok(SequinNode::poll_until($node, 'postgres',
		q{SELECT state = 'paused' AND last_error LIKE 'fatal Kafka producer error: %' FROM sequin_cdc.pg_stat_sinks WHERE name = 'fenced'},
		timeout => 90),
	'a fatal producer error pauses the sink, its reason in pg_stat_sinks');
ok(SequinNode::poll_until($node, 'postgres',
		q{SELECT worker_pid IS NULL FROM sequin_cdc.pg_stat_sinks WHERE name = 'fenced'}, timeout => 30),
	'and its worker stops');
$node->safe_psql('postgres', q{SELECT sequin_cdc.drop_sink('fenced')});

# ---------------------------------------------------------------------------
# Bad configuration
# ---------------------------------------------------------------------------
sub create_error
{
	my ($args, $what, $sqlstate, $re) = @_;
	my ($rc, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT sequin_cdc.create_kafka_sink('bad', $args)");
	like($err, qr/ERROR:  $sqlstate: .*$re/s, "$what: error $sqlstate");
	like($err, qr/HINT:/, "$what: with a hint");
	return $err;
}
create_error(q{'nohost', 't'}, 'brokers without a port', '22023', 'invalid Kafka brokers');
create_error(q{'a:1,,b:2', 't'}, 'an empty broker', '22023', 'invalid Kafka brokers');
create_error(qq{'$brokers', 'a b'}, 'a topic with a space', '22023', 'invalid Kafka topic');
create_error(qq{'$brokers', '{schema}.{tabel}'}, 'an unknown placeholder', '22023', 'placeholder');
create_error(qq{'$brokers', 't', key => 'pk'}, 'an unknown key mode', '22023', 'invalid Kafka key');
create_error(qq{'$brokers', 't', properties => '{"no.such.thing": "1"}'}, 'an unknown property', '22023', 'unknown Kafka property');
create_error(qq{'$brokers', 't', properties => '{"compression.type": "zip"}'}, 'a bad value', '22023', 'invalid value for Kafka property "compression.type"');
create_error(qq{'$brokers', 't', properties => '{"enable.idempotence": "false"}'}, 'a reserved property', '22023', 'is set by sequin_cdc');
create_error(qq{'$brokers', 't', properties => '{"linger.ms": {"a": 1}}'}, 'a property that is an object', '22023', 'must be a string');
create_error(qq{'$brokers', 't', batch_size => 0}, 'batch_size 0', '22023', 'batch_size');
create_error(qq{'$brokers', 't', change_table => 'src'}, 'not a change table', '42809', 'not a change table');
is($node->safe_psql('postgres', q{SELECT count(*) FROM sequin_cdc.sinks WHERE name = 'bad'}), '0',
	'no sink made by a failed create');
for my $row ("'webhook', NULL, NULL, NULL", "'kafka', NULL, NULL, 't'",
	"'kafka', 'http://x/', '127.0.0.1:1', 't'")
{
	my ($rc, $out, $err) = $node->psql('postgres', qq{
		INSERT INTO sequin_cdc.sinks (name, change_table, cursor_seq, type, url, kafka_brokers, kafka_topic, kafka_key)
		VALUES ('raw', 'sequin_cdc.changes', 0, $row, 'none')});
	like($err, qr/violates check constraint "sinks_type_columns_check"/,
		"a row of type, url, brokers, topic ($row) is refused by the table");
}

# ---------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------
my $secret = 'S3cr3tPa55w0rd';
{
	# the failing statements' own text is not logged: only what we say
	my $pre = "SET log_statement = none; SET log_min_error_statement = panic;\n\\set VERBOSITY verbose\n";
	my ($rc, $out, $err) = $node->psql('postgres', $pre . qq{
		SELECT sequin_cdc.create_kafka_sink('bad', '$brokers', 't',
			properties => '{"sasl.password": "$secret", "compression.codec": "$secret"}')});
	like($err, qr/invalid value for Kafka property "compression.codec"/, 'a bad secret value: error');
	unlike($err, qr/$secret/, 'the error does not show the value');
	($rc, $out, $err) = $node->psql('postgres', $pre . qq{
		SELECT sequin_cdc.create_kafka_sink('sasl', '$brokers', 'fixed',
			properties => '{"security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN",
			                "sasl.username": "u", "sasl.password": "$secret", "message.timeout.ms": "3000"}');
		INSERT INTO src VALUES (100001, 1, 'for sasl')});
	is($rc, 0, 'a sink with a sasl.password');
	ok(SequinNode::poll_until($node, 'postgres',
			q{SELECT delivered > 0 OR last_error IS NOT NULL FROM sequin_cdc.pg_stat_sinks WHERE name = 'sasl'}),
		'the sasl sink delivered or failed');
	my $views = $node->safe_psql('postgres', q{
		SELECT s::text FROM sequin_cdc.pg_stat_sinks s;
		SELECT h::text FROM sequin_cdc.health() h;});
	unlike($views, qr/$secret/, 'pg_stat_sinks and health() do not show it');
	$node->safe_psql('postgres', q{SELECT sequin_cdc.drop_sink('sasl')});
	unlike(slurp_file($node->logfile), qr/$secret/, 'the server log does not show it');
}

# ---------------------------------------------------------------------------
# Privileges
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	SELECT sequin_cdc.grant_usage('app');
	CREATE TABLE app_changes_src (id int);
});
{
	my ($rc, $out, $err) = $node->psql('postgres', qq{
		SET ROLE app;
		\\set VERBOSITY verbose
		SELECT sequin_cdc.create_kafka_sink('app_sink', '$brokers', 't')});
	like($err, qr/ERROR:  42501: permission denied for change table/, 'a role that cannot read the change table cannot make a sink of it');
	$node->safe_psql('postgres', q{GRANT SELECT ON sequin_cdc.changes TO app});
	($rc, $out, $err) = $node->psql('postgres', qq{
		SET ROLE app;
		\\set VERBOSITY verbose
		SELECT sequin_cdc.create_kafka_sink('app_sink', '$brokers', 't',
			properties => '{"ssl.ca.location": "/etc/ssl/certs"}')});
	like($err, qr/ERROR:  42501: .*reserved to superusers/, 'a non-superuser cannot name server files');
	($rc, $out, $err) = $node->psql('postgres', qq{
		SET ROLE app;
		SELECT sequin_cdc.create_kafka_sink('app_sink', '$brokers', 't')});
	is($rc, 0, 'with SELECT on the change table it can');
	($rc, $out, $err) = $node->psql('postgres', qq{
		SET ROLE app;
		UPDATE sequin_cdc.sinks SET kafka_properties = '{"plugin.library.paths": "/tmp/evil.so"}' WHERE name = 'app_sink';
		RESET ROLE;
		INSERT INTO src VALUES (100002, 1, 'for app')});
	is($rc, 0, 'the owner may change its sink\'s row');
	ok(SequinNode::poll_until($node, 'postgres',
			q{SELECT last_error LIKE '%reserved to superusers%' FROM sequin_cdc.pg_stat_sinks WHERE name = 'app_sink'},
			timeout => 60),
		'a library path written into its row by a non-superuser is refused by the worker');
}

done_testing();
