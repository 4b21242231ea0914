
# Copyright: sequin_cdc contributors
#
# Bounded memory (DESIGN.md invariant 4): one transaction of 1,000,000 rows is
# captured completely, in order, with the capture worker's memory bounded,
# while logical_decoding_work_mem (64kB) and sequin_cdc.buffer_memory (1MB)
# force both the reorder buffer and the worker's change buffer to spill.
#
# The worker's /proc/<pid>/status is sampled every 100 ms from before the
# INSERT until the capture is complete.  The bound is asserted on RssAnon
# (private memory: what the worker allocates) and on VmHWM (peak resident
# set, which also counts the shared buffers the worker touches; they are
# 16MB here).  Peak figures, time and rate are printed with diag.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;
use Time::HiRes qw(time usleep);

my $nrows = 1_000_000;
my $limit_mb = 64;

my $node = SequinNode::new_node(
	'big_txn',
	logical_decoding_work_mem => '64kB',
	'sequin_cdc.buffer_memory' => '1MB',
	max_wal_size => '2GB',
	checkpoint_timeout => '30min',
	log_statement => 'ddl');
$node->start;

SequinNode::setup_capture($node,
	table => 'big',
	columns => 'id int PRIMARY KEY, a int, b text, c bool',
	slot => 'big_slot');
my $pid = SequinNode::wait_for_worker($node, 'big_slot', timeout => 10);
isnt($pid, '', "capture worker $pid runs");

# Warm the worker up (caches, first batch) so the baseline is its idle size.
$node->safe_psql('postgres', "INSERT INTO big VALUES (0, 0, 'warm-up', true)");
ok(SequinNode::wait_for_capture($node), 'warm-up row captured');
$node->safe_psql('postgres', 'DELETE FROM sequin_cdc.changes');

sub proc_status
{
	my %s;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		$s{$1} = $2 if /^(VmRSS|VmHWM|RssAnon|RssShmem):\s+(\d+) kB/;
	}
	close $fh;
	return \%s;
}

my $base = proc_status();
ok($base, 'can read the worker\'s /proc status');
diag(sprintf('idle worker: VmRSS %d kB, VmHWM %d kB, RssAnon %d kB, RssShmem %d kB',
		@$base{qw(VmRSS VmHWM RssAnon RssShmem)}));
my %peak = %$base;

sub sample
{
	my $s = proc_status();
	return 0 unless $s;
	for my $k (keys %$s)
	{
		$peak{$k} = $s->{$k} if $s->{$k} > ($peak{$k} // 0);
	}
	return 1;
}

# The INSERT runs in the background so that the worker (decoding and
# spilling while the transaction is written) is sampled throughout.
my $t_start = time();
my ($out, $err) = ('', '');
my $h = SequinNode::start_background(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-c', "INSERT INTO big SELECT g, g % 1000, 'row ' || g, g % 2 = 0
		       FROM generate_series(1, $nrows) g"
	],
	'>', \$out, '2>', \$err);
while ($h->pumpable)
{
	sample();
	usleep(100_000);
	$h->pump_nb;
}
ok($h->finish, "INSERT of $nrows rows in one transaction") or diag($err);
my $t_commit = time();
my $target = $node->safe_psql('postgres', 'SELECT pg_current_wal_flush_lsn()');

# Poll the slot from one session while sampling the worker.
my $bg = $node->background_psql('postgres', timeout => 600);
my $captured = 0;
my $alive = 1;
while (time() - $t_commit < 300)
{
	$alive = sample();
	last unless $alive;
	if ($bg->query_safe(
			"SELECT confirmed_flush_lsn >= '$target' FROM pg_replication_slots WHERE slot_name = 'big_slot'"
		) eq 't')
	{
		$captured = 1;
		last;
	}
	usleep(100_000);
}
my $t_done = time();
$bg->quit;
ok($alive, 'the same capture worker ran throughout (no crash, no restart)');
ok($captured, 'slot confirmed past the big transaction within 300 s');
ok(SequinNode::wait_for_capture($node, 'postgres', '300s'), 'wait_for_capture');

my $capture_s = $t_done - $t_commit;
diag(sprintf('INSERT took %.1f s; capture done %.1f s after commit (%.1f s after start): %.0f rows/s after commit',
		$t_commit - $t_start, $capture_s, $t_done - $t_start,
		$nrows / ($capture_s > 0 ? $capture_s : 1)));
my $anon_growth = ($peak{RssAnon} - $base->{RssAnon}) / 1024;
my $hwm_growth = ($peak{VmHWM} - $base->{VmHWM}) / 1024;
diag(sprintf('worker peak: VmRSS %d kB, VmHWM %d kB, RssAnon %d kB, RssShmem %d kB; '
		  . 'growth over idle: VmHWM %.1f MB, RssAnon %.1f MB',
		@peak{qw(VmRSS VmHWM RssAnon RssShmem)}, $hwm_growth, $anon_growth));
cmp_ok($anon_growth, '<', $limit_mb, "private memory (RssAnon) growth < $limit_mb MB");
cmp_ok($hwm_growth, '<', $limit_mb, "peak RSS (VmHWM) growth < $limit_mb MB");

# ---------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------
is( $node->safe_psql('postgres', q{
		SELECT count(*), count(DISTINCT record_pk), min(record_pk::int), max(record_pk::int),
		       count(*) FILTER (WHERE action = 'insert'),
		       count(DISTINCT committed_at), max(seq) - min(seq) + 1
		  FROM sequin_cdc.changes}),
	"$nrows|$nrows|1|$nrows|$nrows|1|$nrows",
	"exactly $nrows insert rows, distinct keys, one transaction, contiguous seq");
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			SELECT record_pk::int k, lag(record_pk::int) OVER (ORDER BY seq) p
			  FROM sequin_cdc.changes) x
		 WHERE k <= p}),
	'0',
	'rows come out in the order the transaction wrote them (memory and spill file)');
is( $node->safe_psql('postgres', q{
		SELECT c.record = to_jsonb(r) AND c.changes IS NULL
		       AND c.source_table_name = 'big' AND c.source_table_schema = 'public'
		  FROM sequin_cdc.changes c, big r
		 WHERE c.record_pk = '777777' AND r.id = 777777}),
	't',
	'record of id 777777 is to_jsonb of the source row');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM sequin_cdc.changes c JOIN big r ON c.record_pk = r.id::text
		 WHERE c.record_pk::int % 99991 = 0 AND c.record <> to_jsonb(r)}),
	'0',
	'sampled records equal their source rows');

# The spill file and buffer are reset: the next transaction comes out alone.
$node->safe_psql('postgres',
	"INSERT INTO big VALUES (1000001, 1, 'after', true), (1000002, 2, 'after', false)");
ok(SequinNode::wait_for_capture($node), 'a small transaction after the big one is captured');
is( $node->safe_psql('postgres', q{
		SELECT count(*), count(DISTINCT record_pk), max(record_pk::int) FROM sequin_cdc.changes}),
	($nrows + 2) . '|' . ($nrows + 2) . '|' . ($nrows + 2),
	'it adds exactly its own rows, nothing of the big transaction again');

$node->stop;
done_testing();
