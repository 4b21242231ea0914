
# Copyright: sequin_cdc contributors
#
# pg_dump / pg_restore of a database that captures (issue 12):
#  - a source database with a slot, two retention rules (one with a filter,
#    one into a change table of its own), a retention policy, a paused
#    webhook sink with a secret header, a completed backfill and captured
#    rows is dumped in plain and custom format;
#  - each dump is restored into a fresh database of the same cluster with
#    psql, psql --single-transaction, pg_restore, pg_restore
#    --single-transaction and pg_restore -j 2, and into a second cluster:
#    no ERROR in any restore's output, every configuration row, every
#    change row and every sequence equal to the source's, the database id
#    kept;
#  - a restored database never claims the source's slot: health() says
#    "no slot here: create one" (with the create_slot call, replaces =>
#    in the same cluster, where slot names are taken), pg_stat_capture shows
#    no row, nothing is captured there, the source keeps capturing;
#  - create_slot under the taken name says whose slot it is;
#    create_slot(..., replaces => 's1') takes the configuration over and
#    captures (filter applied, ids and seqs after the restored ones);
#    it refuses a live slot of this database, an unknown configuration, its
#    own name, a null name, and a role that may not move the rules (its
#    slot is dropped again, nothing changes);
#    drop_slot of the restored configuration removes it and leaves the
#    source's slot; in the second cluster create_slot('s1', ...) takes the
#    row over directly;
#  - with pg_cron: a policy restored into another database names a job of
#    the source; health() says so and tells the set_retention_policy()
#    call, which schedules a job here.
# On the code before this test every restore reported duplicate keys
# (change_tables_pkey, database_identity_pkey), the registry and database id
# differed, the single-transaction restores restored nothing, and health()
# in the restored database reported the source's slot and worker as ok.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $have_cron = -f SequinNode::pg_config('sharedir') . '/extension/pg_cron.control';
my %cron_a = $have_cron
  ? (shared_preload_libraries => 'sequin_cdc,pg_cron', 'cron.database_name' => 'cronsrc')
  : ();
my %cron_b = $have_cron
  ? (shared_preload_libraries => 'sequin_cdc,pg_cron', 'cron.database_name' => 'cronhome')
  : ();

my $node = SequinNode::new_node('main', %cron_a);
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE cronsrc') if $have_cron;
my $tmp = PostgreSQL::Test::Utils::tempdir();

# Runs a client program against $n; returns (exit ok, stdout, stderr).
sub client
{
	my ($n, @cmd) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $cmd[0], '-h', $n->host, '-p', $n->port, @cmd[ 1 .. $#cmd ] ],
		'<', \undef, '>', \$out, '2>', \$err);
	return ($ok, $out, $err);
}

# ---------------------------------------------------------------------------
# The source database
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', q{
	CREATE EXTENSION sequin_cdc;
	CREATE TABLE t (id int PRIMARY KEY, a int, b text);
	ALTER TABLE t REPLICA IDENTITY FULL;
	INSERT INTO t SELECT g, g, 'before' FROM generate_series(1, 20) g;
	SELECT sequin_cdc.create_publication('p1', ARRAY['t']::regclass[]);
});
$node->safe_psql('src', q{SELECT sequin_cdc.create_slot('s1', 'p1')});
$node->safe_psql('src', q{
	SELECT sequin_cdc.create_change_table('public.ct2');
	SELECT sequin_cdc.add_change_retention('t', 'public.ct2', filter => 'a > 2', slot => 's1');
	SELECT sequin_cdc.add_change_retention('t', actions => '{insert,delete}', slot => 's1');
	SELECT sequin_cdc.set_retention_policy('public.ct2', '7 days', schedule => NULL);
	SELECT sequin_cdc.create_webhook_sink('w1', 'http://127.0.0.1:9/hook', 'public.ct2',
	                                      '{"Authorization": "Bearer s3cret"}');
});
$node->safe_psql('src', q{SELECT sequin_cdc.pause_sink('w1')});
my $bf = $node->safe_psql('src', q{SELECT sequin_cdc.backfill('t')});
ok( SequinNode::poll_until($node, 'src',
		"SELECT state = 'completed' FROM sequin_cdc.backfills WHERE id = $bf", timeout => 60),
	'the backfill completes');
$node->safe_psql('src', q{
	INSERT INTO t SELECT g, g, 'live' FROM generate_series(21, 30) g;
	UPDATE t SET b = 'updated' WHERE id IN (1, 5, 25);
	DELETE FROM t WHERE id IN (2, 26);
});
SequinNode::wait_for_capture($node, 'src');
ok( SequinNode::poll_until($node, 'src',
		q{SELECT count(*) = 0 FROM sequin_cdc.pg_stat_sinks WHERE worker_pid IS NOT NULL}),
	'the paused sink has no worker');

# Everything a restore must bring back, as one text per part.
my %parts = (
	identity => q{SELECT id FROM sequin_cdc.database_identity},
	slots => q{SELECT json_agg(s ORDER BY slot_name) FROM sequin_cdc.slots s},
	change_tables =>
	  q{SELECT json_agg(c ORDER BY change_table::text) FROM sequin_cdc.change_tables c},
	rules => q{SELECT json_agg(r ORDER BY id) FROM sequin_cdc.change_retention r},
	policies =>
	  q{SELECT json_agg(p ORDER BY change_table::text) FROM sequin_cdc.retention_policies p},
	sinks => q{SELECT json_agg(s ORDER BY id) FROM sequin_cdc.sinks s},
	backfills => q{SELECT json_agg(b ORDER BY id) FROM sequin_cdc.backfills b},
	changes => q{SELECT count(*) || ' ' || md5(string_agg(c::text, ',' ORDER BY id))
	               FROM sequin_cdc.changes c},
	ct2 => q{SELECT count(*) || ' ' || md5(string_agg(c::text, ',' ORDER BY id)) FROM ct2 c},
	sequences => q{SELECT string_agg(format('%s=%s', s, coalesce(v.last_value::text, 'unused')), ' ' ORDER BY s)
	                 FROM unnest(ARRAY['sequin_cdc.change_retention_id_seq', 'sequin_cdc.sinks_id_seq',
	                                   'sequin_cdc.backfills_id_seq', 'sequin_cdc.changes_id_seq',
	                                   'public.ct2_id_seq']) s,
	                      LATERAL (SELECT * FROM pg_sequences q
	                                WHERE format('%I.%I', q.schemaname, q.sequencename) = s) v},
);
my %source = map { $_ => $node->safe_psql('src', $parts{$_}) } keys %parts;
like($source{sinks}, qr/Bearer s3cret/, 'the source sink has its secret header');
like($source{ct2}, qr/^[1-9][0-9]+ /, 'the source captured (and backfilled) into ct2');

# Every part in $db of $n equals the source's.
sub same_as_source
{
	my ($n, $db, $what) = @_;
	for my $k (sort keys %parts)
	{
		is($n->safe_psql($db, $parts{$k}), $source{$k}, "$what: $k equal to the source");
	}
}

# ---------------------------------------------------------------------------
# Dumps, and restores into fresh databases of this cluster
# ---------------------------------------------------------------------------
my ($ok, $out, $err) = client($node, 'pg_dump', '-d', 'src', '-f', "$tmp/src.sql");
ok($ok, 'plain dump') or diag($err);
($ok, $out, $err) = client($node, 'pg_dump', '-d', 'src', '-Fc', '-f', "$tmp/src.dump");
ok($ok, 'custom dump') or diag($err);

my @restores = (
	[ 'r_plain', 'psql', '-X', '-q', '-f', "$tmp/src.sql" ],
	[ 'r_plain_1', 'psql', '-X', '-q', '-1', '-v', 'ON_ERROR_STOP=1', '-f', "$tmp/src.sql" ],
	[ 'r_custom', 'pg_restore', "$tmp/src.dump" ],
	[ 'r_custom_1', 'pg_restore', '-1', '-e', "$tmp/src.dump" ],
	[ 'r_custom_j', 'pg_restore', '-j', '2', "$tmp/src.dump" ],
);
for my $r (@restores)
{
	my ($db, $prog, @args) = @$r;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	($ok, $out, $err) = client($node, $prog, '-d', $db, @args);
	ok($ok, "$db: $prog exits 0");
	unlike($err, qr/ERROR/, "$db: no ERROR in the restore's output") or diag($err);
	same_as_source($node, $db, $db);

	# the slot stayed with src: nothing here claims it
	like(
		$node->safe_psql($db,
			q{SELECT status || ': ' || detail FROM sequin_cdc.health() WHERE check_name = 'slot s1'}),
		qr/^error: no slot here: create one; slot s1 belongs to database src .*create_slot\('<new name>', 'p1', replaces => 's1'\)/,
		"$db: health() says there is no slot here and how to create one");
	is( $node->safe_psql($db,
			q{SELECT count(*) FROM sequin_cdc.health() WHERE check_name IN ('worker s1', 'lag s1')}),
		'0', "$db: health() reports no worker of the source as its own");
	is($node->safe_psql($db, q{SELECT count(*) FROM sequin_cdc.pg_stat_capture}),
		'0', "$db: pg_stat_capture shows no slot");
}

# ---------------------------------------------------------------------------
# Nothing is captured in a restored database; the source goes on
# ---------------------------------------------------------------------------
$node->safe_psql('r_plain', q{INSERT INTO t VALUES (100, 100, 'restored')});
my $r_lsn = $node->safe_psql('r_plain', q{SELECT pg_current_wal_flush_lsn()});
my ($rc, $o, $e) = $node->psql('r_plain', q{SELECT sequin_cdc.wait_for_capture()});
like($e, qr/no sequin_cdc slot in this database/, 'wait_for_capture: no slot in the restored database');
$node->safe_psql('src', q{INSERT INTO t VALUES (100, 100, 'source')});
SequinNode::wait_for_capture($node, 'src');
is( $node->safe_psql('src',
		qq{SELECT confirmed_flush_lsn >= '$r_lsn' FROM pg_replication_slots WHERE slot_name = 's1'}),
	't', 'the source slot is past the restored database\'s insert');
is( $node->safe_psql('src',
		q{SELECT string_agg(record->>'b', ',') FROM ct2 WHERE record_pk = '100'}),
	'source', 'the source still captures its own rows');
is($node->safe_psql('r_plain', q{SELECT count(*) FROM ct2 WHERE record_pk = '100'}),
	'0', 'nothing was captured in the restored database');
isnt(SequinNode::worker_pid($node, 's1', 'src'), '', 'the source worker runs');

# create_slot under the taken name says whose it is
($rc, $o, $e) = $node->psql('r_plain', q{SELECT sequin_cdc.create_slot('s1', 'p1')});
like($e, qr/replication slot "s1" already exists in database "src".*replaces => 's1'/s,
	'create_slot of the taken name says whose slot it is and how to take over');

# a slot of another name takes the configuration over and captures
$node->safe_psql('r_plain', q{SELECT sequin_cdc.create_slot('s1_r', 'p1', replaces => 's1')});
is( $node->safe_psql('r_plain',
		q{SELECT (SELECT string_agg(slot_name, ',') FROM sequin_cdc.slots) || ' '
		      || (SELECT string_agg(DISTINCT slot_name, ',') FROM sequin_cdc.change_retention) || ' '
		      || (SELECT string_agg(DISTINCT slot_name, ',') FROM sequin_cdc.backfills)}),
	's1_r s1_r s1', 'the new slot took over the rules; the finished backfill keeps its slot name');
isnt(SequinNode::wait_for_worker($node, 's1_r', db => 'r_plain', timeout => 30),
	'', 'the restored database has its own worker');
$node->safe_psql('r_plain', q{
	INSERT INTO t VALUES (101, 101, 'restored'), (102, 1, 'filtered out of ct2');
});
SequinNode::wait_for_capture($node, 'r_plain');
is( $node->safe_psql('r_plain', q{
		SELECT string_agg(record_pk || ':' || action, ',' ORDER BY id) FROM ct2 WHERE record_pk::int > 100}),
	'101:insert', 'changes after create_slot are captured, filter applied');
is( $node->safe_psql('r_plain', q{
		SELECT string_agg(record_pk, ',' ORDER BY id) FROM sequin_cdc.changes WHERE record_pk::int > 100}),
	'101,102', 'the second rule captures too');
is( $node->safe_psql('r_plain', q{
		SELECT bool_and(c.source_database_id = d.id)
		       AND min(c.id) > (SELECT max(id) FROM ct2 WHERE record_pk::int <= 100)
		       AND min(c.seq) > (SELECT max(seq) FROM ct2 WHERE record_pk::int <= 100)
		  FROM ct2 c, sequin_cdc.database_identity d WHERE c.record_pk::int > 100}),
	't', 'new rows carry the kept database id, ids and seqs after the restored ones');
is( $node->safe_psql('r_plain',
		q{SELECT string_agg(status, ',') FROM sequin_cdc.health() WHERE check_name ~ 's1_r$'}),
	'ok,ok,ok', 'health() in the restored database: slot, worker and lag ok');
is($node->safe_psql('r_plain', q{SELECT string_agg(slot_name, ',') FROM sequin_cdc.pg_stat_capture}),
	's1_r', 'pg_stat_capture shows the restored database\'s own slot only');

# replaces => refuses what it cannot take over, and leaves nothing behind
($rc, $o, $e) = $node->psql('r_plain',
	q{SELECT sequin_cdc.create_slot('s2', 'p1', replaces => 's1_r')});
like($e, qr/slot "s1_r" is a slot of this database/, 'replaces => refuses a slot of this database');
($rc, $o, $e) = $node->psql('r_custom_1',
	q{SELECT sequin_cdc.create_slot('s2', 'p1', replaces => 'nope')});
like($e, qr/this database has no configuration of slot "nope"/,
	'replaces => refuses a slot this database has no configuration of');
($rc, $o, $e) = $node->psql('r_custom_1',
	q{SELECT sequin_cdc.create_slot('s1', 'p1', replaces => 's1')});
like($e, qr/a slot cannot replace itself/, 'replaces => refuses its own name');
($rc, $o, $e) = $node->psql('r_custom_1', q{SELECT sequin_cdc.create_slot(NULL, 'p1')});
like($e, qr/slot, publication and failover must not be null/, 'create_slot refuses a null name');
# a role with REPLICATION that does not own the change tables the rules
# write into cannot take them over: the slot it made is dropped again
$node->safe_psql('r_custom_1', q{
	CREATE ROLE repl LOGIN REPLICATION;
	SELECT sequin_cdc.grant_usage('repl');
});
($rc, $o, $e) = $node->psql('r_custom_1', q{SET ROLE repl;
	SELECT sequin_cdc.create_slot('s_bad', 'p1', replaces => 's1');});
isnt($rc, 0, 'replaces => as a role that does not own the rules\' change tables fails');
like($e, qr/does not own/, 'it says which rule it may not move');
is( $node->safe_psql('r_custom_1', q{
		SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_bad') || ' '
		    || (SELECT string_agg(slot_name, ',') FROM sequin_cdc.slots) || ' '
		    || (SELECT string_agg(DISTINCT slot_name, ',') FROM sequin_cdc.change_retention)}),
	'0 s1 s1', 'no slot left behind, the configuration unchanged');

# a role that owns what the rules write (and ran only finished backfills)
# takes the configuration over: finished backfills are not moved, which the
# backfill guard refuses to a non-superuser
$node->safe_psql('r_custom_1', q{
	DELETE FROM sequin_cdc.change_retention WHERE change_table = 'sequin_cdc.changes'::regclass;
	ALTER TABLE t OWNER TO repl;
	ALTER TABLE ct2 OWNER TO repl;
});
($rc, $o, $e) = $node->psql('r_custom_1', q{SET ROLE repl;
	SELECT sequin_cdc.create_slot('s_repl', 'p1', replaces => 's1');});
is($rc, 0, 'replaces => as the owner of the rules\' change tables succeeds') or diag($e);
is( $node->safe_psql('r_custom_1', q{
		SELECT (SELECT string_agg(slot_name, ',') FROM sequin_cdc.slots) || ' '
		    || (SELECT string_agg(DISTINCT slot_name, ',') FROM sequin_cdc.change_retention) || ' '
		    || (SELECT string_agg(DISTINCT slot_name || ':' || state, ',') FROM sequin_cdc.backfills)}),
	's_repl s_repl s1:completed', 'it took the rules over; the finished backfill stays as it ran');

# a backfill needs the slot here: before create_slot nothing would write it
($rc, $o, $e) = $node->psql('r_custom_j', q{SELECT sequin_cdc.backfill('t', 'public.ct2')});
like($e, qr/slot "s1" of the retention rules of "public.t" is not a sequin_cdc slot of this database.*replaces => 's1'/s,
	'backfill() before create_slot in a restored database is refused, with the call to make');
is($node->safe_psql('r_custom_j', q{SELECT count(*) FROM sequin_cdc.backfills}),
	'1', 'and no backfill row was added');

# two sessions taking the same configuration over at once: one wins, the
# other errors and leaves no slot (the rules' table is locked so that both
# are under way before either commits)
my $locker = $node->background_psql('r_custom_j');
$locker->query_safe(q{BEGIN; LOCK TABLE sequin_cdc.change_retention IN EXCLUSIVE MODE;});
my %race;
for my $s (qw(s_a s_b))
{
	my ($out, $err) = ('', '');
	$race{$s} = { out => \$out, err => \$err };
	$race{$s}{h} = IPC::Run::start(
		[ 'psql', '-X', '-h', $node->host, '-p', $node->port, '-d', 'r_custom_j', '-c',
		  "SELECT sequin_cdc.create_slot('$s', 'p1', replaces => 's1')" ],
		'<', \undef, '>', \$out, '2>', \$err);
	my $waiting = $s eq 's_a' ? 1 : 2;
	ok( SequinNode::poll_until($node, 'postgres', qq{
			SELECT count(*) = $waiting FROM pg_stat_activity
			 WHERE datname = 'r_custom_j' AND wait_event_type = 'Lock' AND query LIKE '%create_slot%'},
			timeout => 60),
		"create_slot('$s', replaces => 's1') is under way");
}
$locker->query_safe('COMMIT');
$locker->quit;
my @won;
for my $s (qw(s_a s_b))
{
	$race{$s}{h}->finish;
	push @won, $s if $race{$s}{h}->result == 0 && ${ $race{$s}{err} } eq '';
}
is(scalar(@won), 1, 'exactly one of two concurrent takeovers succeeds');
like(join(' ', map { ${ $race{$_}{err} } } qw(s_a s_b)),
	qr/the configuration of slot "s1" was removed or taken over meanwhile/,
	'the other says the configuration was taken over meanwhile');
is( $node->safe_psql('r_custom_j', q{
		SELECT (SELECT string_agg(slot_name, ',') FROM pg_replication_slots WHERE slot_name IN ('s_a', 's_b')) || ' '
		    || (SELECT string_agg(slot_name, ',') FROM sequin_cdc.slots) || ' '
		    || (SELECT string_agg(DISTINCT slot_name, ',') FROM sequin_cdc.change_retention)}),
	"$won[0] $won[0] $won[0]", 'one slot left, and it has the configuration');

# drop_slot of a restored configuration removes the configuration only
($rc, $o, $e) = $node->psql('r_custom', q{SELECT sequin_cdc.drop_slot('s1')});
is($rc, 0, 'drop_slot of the restored configuration succeeds');
like($e, qr/replication slot "s1" is not in this database and stays/, 'and says the slot stays');
is($node->safe_psql('r_custom', q{SELECT count(*) FROM sequin_cdc.slots}),
	'0', 'the restored configuration is gone');
$node->safe_psql('src', q{INSERT INTO t VALUES (103, 103, 'source')});
SequinNode::wait_for_capture($node, 'src');
is($node->safe_psql('src', q{SELECT count(*) FROM ct2 WHERE record_pk = '103'}),
	'1', 'the source slot still captures');

# ---------------------------------------------------------------------------
# A second cluster: the slot name is free, create_slot takes the row over
# ---------------------------------------------------------------------------
my $other = SequinNode::new_node('other', %cron_b);
$other->start;
$other->safe_psql('postgres', 'CREATE DATABASE cronhome') if $have_cron;
$other->safe_psql('postgres', 'CREATE DATABASE src');
($ok, $out, $err) = client($other, 'pg_restore', '-d', 'src', "$tmp/src.dump");
ok($ok, 'second cluster: pg_restore exits 0');
unlike($err, qr/ERROR/, 'second cluster: no ERROR in the restore\'s output') or diag($err);
same_as_source($other, 'src', 'second cluster');
like(
	$other->safe_psql('src',
		q{SELECT status || ': ' || detail FROM sequin_cdc.health() WHERE check_name = 'slot s1'}),
	qr/^error: no slot here: create one with SELECT sequin_cdc.create_slot\('s1', 'p1'\)/,
	'second cluster: health() says to create the slot');
$other->safe_psql('src', q{SELECT sequin_cdc.create_slot('s1', 'p1')});
$other->safe_psql('src', q{INSERT INTO t VALUES (101, 101, 'other cluster')});
SequinNode::wait_for_capture($other, 'src');
is( $other->safe_psql('src', q{
		SELECT string_agg(c.record->>'b', ',') FROM ct2 c, sequin_cdc.database_identity d
		 WHERE c.record_pk = '101' AND c.source_database_id = d.id}),
	'other cluster', 'second cluster: captured after create_slot, with the kept database id');

# ---------------------------------------------------------------------------
# pg_cron: a restored policy names a job of the database it came from
# ---------------------------------------------------------------------------
SKIP:
{
	skip 'pg_cron not installed for this server', 6 unless $have_cron;

	$node->safe_psql('cronsrc', q{
		CREATE EXTENSION pg_cron;
		CREATE EXTENSION sequin_cdc;
		SELECT sequin_cdc.create_change_table('public.cc');
	});
	my $job = $node->safe_psql('cronsrc',
		q{SELECT sequin_cdc.set_retention_policy('public.cc', '1 day', '*/5 * * * *')});
	is( $node->safe_psql('cronsrc',
			q{SELECT status FROM sequin_cdc.health() WHERE check_name = 'retention public.cc'}),
		'ok', 'the source policy has its job');
	($ok, $out, $err) = client($node, 'pg_dump', '-d', 'cronsrc', '-Fc', '-f', "$tmp/cron.dump");
	ok($ok, 'dump of the pg_cron database') or diag($err);

	($ok, $out, $err) = client($other, 'pg_restore', '-d', 'cronhome', "$tmp/cron.dump");
	unlike($err, qr/ERROR/, 'pg_cron database restored without ERROR') or diag($err);
	is( $other->safe_psql('cronhome',
			q{SELECT jobid || ' ' || keep FROM sequin_cdc.retention_policies}),
		"$job 1 day", 'the policy is restored as it was');
	like(
		$other->safe_psql('cronhome',
			q{SELECT status || ': ' || detail FROM sequin_cdc.health() WHERE check_name = 'retention public.cc'}),
		qr/^error: pg_cron job $job is gone from this database .*set_retention_policy\('public\.cc', '1 day', '\*\/5 \* \* \* \*'\)/,
		'health() says the job is not here and how to schedule it again');
	$other->safe_psql('cronhome',
		q{SELECT sequin_cdc.set_retention_policy('public.cc', '1 day', '*/5 * * * *')});
	is( $other->safe_psql('cronhome',
			q{SELECT h.status || ' ' || (j.database = current_database())
			    FROM sequin_cdc.health() h, sequin_cdc.retention_policies p JOIN cron.job j USING (jobid)
			   WHERE h.check_name = 'retention public.cc'}),
		'ok true', 'after set_retention_policy the job is a job of this database');
}

$other->stop;
$node->stop;
done_testing();
