
# Copyright: sequin_cdc contributors
#
# Least privilege in the workers (issue 11): no user-defined code runs with
# more rights than the role that owns it, and a worker never acts as a role
# it was not given.  Each attack is played by non-superusers (mallory,
# trent, eve); every check would fail if the protection were removed.
#
# (a) change table triggers: BEFORE and AFTER INSERT triggers on mallory's
#     change table run as mallory, restricted (current_user recorded, ALTER
#     ROLE ... SUPERUSER refused); the AFTER trigger of trent's change table,
#     fed in the same batch, runs as trent.  A trigger that runs ALTER ROLE
#     unguarded makes the change fail: it is parked with the error
#     (sequin_cdc.parked_changes), mallory stays no superuser, and once the
#     trigger is dropped a retry writes it: nothing is lost.  An owner that
#     revoked INSERT from itself gets no rows: they are parked with a clear
#     error.
# (b) CHECK constraint, index expression, generated column and column
#     DEFAULT of the change table run as mallory.
# (c) a retention filter naming a user function (IMMUTABLE or not) is
#     refused; a rule row naming one (as left by an older version) is never
#     evaluated by the decoder.
# (d) backfill where clauses: the injections of the issue are refused (by
#     backfill() or, at the latest, by the worker before any read); a
#     condition with now() works; a backfill whose role lost SELECT, or was
#     dropped, fails with a message saying so and reads nothing.
# (e) a backfill reads as the role that called backfill(), restricted: a
#     row level security policy of the table runs as that role.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use SequinNode;
use Test::More;

my $node = SequinNode::new_node('priv');
$node->start;

# as a login role (not SET ROLE: session_user is that role too)
sub as_role
{
	my ($role, $sql) = @_;
	return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

sub qry { return $node->safe_psql('postgres', $_[0]); }

$node->safe_psql('postgres', q{
	CREATE EXTENSION sequin_cdc;
	CREATE ROLE mallory LOGIN;
	CREATE ROLE trent LOGIN;
	CREATE ROLE eve LOGIN;
	GRANT CREATE ON SCHEMA public TO mallory, trent;

	-- who ran what: written by the hostile function, readable by the test
	CREATE TABLE who_log (kind text, who text, err text, sess text);
	GRANT SELECT, INSERT ON who_log TO PUBLIC;

	CREATE TABLE src (id bigint PRIMARY KEY, v int);
	ALTER TABLE src REPLICA IDENTITY FULL;
	CREATE TABLE big (id bigint PRIMARY KEY, t text);
	ALTER TABLE big REPLICA IDENTITY FULL;
	INSERT INTO big SELECT g, 'r' || g FROM generate_series(1, 200) g;
	GRANT SELECT ON big TO mallory, eve;

	SELECT sequin_cdc.create_change_table('mallory_changes');
	SELECT sequin_cdc.create_change_table('trent_changes');
	ALTER TABLE mallory_changes OWNER TO mallory;
	ALTER TABLE trent_changes OWNER TO trent;
});

# The hostile code: tries to make whoever runs it superuser, and records
# who that was and what happened.  SECURITY INVOKER, owned by mallory.
as_role('mallory', q{
	CREATE FUNCTION note(kind text) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		e text := 'ALTER ROLE succeeded';
	BEGIN
		BEGIN
			EXECUTE format('ALTER ROLE %I SUPERUSER', current_user);
		EXCEPTION WHEN others THEN
			e := SQLERRM;
		END;
		INSERT INTO public.who_log VALUES (kind, current_user, e, session_user);
	END $$;
	CREATE FUNCTION note_trg() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM public.note(TG_ARGV[0]);
		RETURN NEW;
	END $$;
	-- declared IMMUTABLE (a lie), so that index expressions, generated
	-- columns and filters accept it
	CREATE FUNCTION imm(kind text, x bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
	BEGIN
		PERFORM public.note(kind);
		RETURN x;
	END $$;
	CREATE FUNCTION chk(x bigint) RETURNS bool LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM public.note('check');
		RETURN true;
	END $$;
	CREATE FUNCTION dflt() RETURNS text LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM public.note('default');
		RETURN 'default ran';
	END $$;

	CREATE TRIGGER b BEFORE INSERT ON mallory_changes
		FOR EACH ROW EXECUTE FUNCTION note_trg('before');
	CREATE TRIGGER a AFTER INSERT ON mallory_changes
		FOR EACH ROW EXECUTE FUNCTION note_trg('after');
	ALTER TABLE mallory_changes ADD CONSTRAINT c CHECK (chk(seq));
	CREATE INDEX ON mallory_changes (imm('index', seq));
	ALTER TABLE mallory_changes ADD COLUMN g bigint GENERATED ALWAYS AS (imm('generated', seq)) STORED;
	ALTER TABLE mallory_changes ADD COLUMN extra text DEFAULT dflt();
});
as_role('trent', q{
	CREATE TRIGGER a AFTER INSERT ON trent_changes
		FOR EACH ROW EXECUTE FUNCTION note_trg('after_trent');
});

$node->safe_psql('postgres', q{
	TRUNCATE who_log;
	SELECT sequin_cdc.create_publication('priv_pub', ARRAY['src', 'big']::regclass[]);
});
$node->safe_psql('postgres', "SELECT sequin_cdc.create_slot('priv_slot', 'priv_pub')");
$node->safe_psql('postgres', q{
	SELECT sequin_cdc.add_change_retention('src', 'mallory_changes');
	SELECT sequin_cdc.add_change_retention('src', 'trent_changes');
	SELECT sequin_cdc.add_change_retention('big');
});
isnt(SequinNode::wait_for_worker($node, 'priv_slot', timeout => 30), '', 'capture worker runs');

sub superusers
{
	return qry("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles "
		  . "WHERE rolsuper AND rolname IN ('mallory', 'trent', 'eve')");
}

sub last_error
{
	return qry("SELECT coalesce(last_error, '') FROM sequin_cdc.pg_stat_capture WHERE slot_name = 'priv_slot'");
}

# ---------------------------------------------------------------------------
# (a), (b): code on the change tables runs as their owners, restricted
# ---------------------------------------------------------------------------
qry("INSERT INTO src VALUES (1, 1), (2, 2)");
ok(SequinNode::wait_for_capture($node), 'changes captured');
is(qry("SELECT count(*) FROM mallory_changes"), '2', 'mallory_changes has both rows');
is(qry("SELECT count(*) FROM trent_changes"), '2', 'trent_changes has both rows');
is(qry("SELECT string_agg(DISTINCT kind || ':' || who, ' ' ORDER BY kind || ':' || who) FROM who_log"),
	'after:mallory after_trent:trent before:mallory check:mallory default:mallory generated:mallory index:mallory',
	'triggers, CHECK, index expression, generated column, DEFAULT ran as the table owner; AFTER triggers of each table as its own owner');
is(qry("SELECT count(*) FROM who_log WHERE err = 'ALTER ROLE succeeded'"), '0',
	'ALTER ROLE ... SUPERUSER failed every time');
like(qry("SELECT min(err) FROM who_log"), qr/permission denied|must be superuser/,
	'with a privilege error');
is(superusers(), '', 'mallory and trent are not superusers');
is(qry("SELECT count(*) FROM mallory_changes WHERE extra = 'default ran' AND g = seq"), '2',
	'extra columns: default evaluated, generated column computed');

# an unguarded ALTER ROLE in a trigger: the change is parked, nothing is lost
as_role('mallory', q{
	CREATE FUNCTION grab() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		ALTER ROLE mallory SUPERUSER;
		RETURN NEW;
	END $$;
	CREATE TRIGGER z BEFORE INSERT ON mallory_changes FOR EACH ROW EXECUTE FUNCTION grab();
});
qry("INSERT INTO src VALUES (3, 3)");
ok($node->poll_query_until('postgres',
		"SELECT bool_and(error ~ 'superuser|permission denied to alter role') FROM sequin_cdc.parked_changes WHERE change_table = 'mallory_changes'::regclass"),
	'the change fails on the trigger: parked with the error');
is(superusers(), '', 'mallory is still not superuser');
as_role('mallory', "DROP TRIGGER z ON mallory_changes");
qry("SELECT sequin_cdc.retry_parked_changes('priv_slot')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM sequin_cdc.parked_changes"),
	'the retry writes it once the trigger is gone');
is(qry("SELECT count(*) || '/' || count(DISTINCT record_pk) FROM mallory_changes"), '3/3',
	'mallory_changes: every change, once');
is(qry("SELECT count(*) FROM trent_changes"), '3', 'trent_changes: every change');

# an owner that revoked INSERT from itself
as_role('mallory', "REVOKE INSERT ON mallory_changes FROM mallory");
qry("INSERT INTO src VALUES (4, 4)");
ok($node->poll_query_until('postgres',
		"SELECT bool_and(error ~ 'may not insert into it') FROM sequin_cdc.parked_changes WHERE change_table = 'mallory_changes'::regclass"),
	'no INSERT privilege: the change is parked with a clear error');
is(qry("SELECT count(*) FROM mallory_changes"), '3', 'no row written without the privilege');
as_role('mallory', "GRANT INSERT ON mallory_changes TO mallory");
qry("SELECT sequin_cdc.retry_parked_changes('priv_slot')");
ok($node->poll_query_until('postgres', "SELECT count(*) = 0 FROM sequin_cdc.parked_changes"),
	'the retry writes it once INSERT is granted back');
is(qry("SELECT count(*) FROM mallory_changes"), '4', 'and the change arrives');
is(superusers(), '', 'nobody became superuser');

# ---------------------------------------------------------------------------
# (c) retention filters: built-in code only
# ---------------------------------------------------------------------------
{
	qry("CREATE TABLE src2 (id bigint PRIMARY KEY, v int); ALTER TABLE src2 REPLICA IDENTITY FULL");
	qry("ALTER PUBLICATION priv_pub ADD TABLE src2");
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT sequin_cdc.add_change_retention('src2', 'mallory_changes', filter => 'public.imm(''filter'', id) > 0')");
	isnt($rc, 0, 'a filter calling a user IMMUTABLE function is refused');
	like($err, qr/invalid retention filter.*\n.*DETAIL:  It calls public\.imm\(text,bigint\), which is not built in/,
		'with the reason');
	is(qry("SELECT count(*) FROM sequin_cdc.change_retention WHERE source_table = 'src2'::regclass"), '0',
		'no rule added');

	# a rule row naming a user function (as an older version let in): the
	# decoder never runs it, and keeps every change of the rule
	qry(q{
		SELECT sequin_cdc.add_change_retention('src2', 'trent_changes', filter => 'id > 0');
		UPDATE sequin_cdc.change_retention SET filter = 'public.imm(''decoder'', id) > 0'
		 WHERE source_table = 'src2'::regclass;
		SELECT sequin_cdc._invalidate_relation('src2');
	});
	qry("INSERT INTO src2 VALUES (1, 1)");
	ok(SequinNode::wait_for_capture($node), 'src2 captured');
	is(qry("SELECT count(*) FROM who_log WHERE kind = 'decoder'"), '0',
		'the decoder did not run the user function');
	is(qry("SELECT count(*) FROM trent_changes WHERE source_table_name = 'src2'"), '1',
		'the change is kept');
}

# ---------------------------------------------------------------------------
# (d), (e): backfills
# ---------------------------------------------------------------------------
# what the current API needs to let a role start a backfill
qry(q{
	GRANT USAGE ON SCHEMA sequin_cdc TO mallory, eve;
	GRANT SELECT ON sequin_cdc.change_retention TO mallory, eve;
	GRANT SELECT, INSERT ON sequin_cdc.backfills TO mallory, eve;
	GRANT USAGE ON SEQUENCE sequin_cdc.backfills_id_seq TO mallory, eve;
	GRANT EXECUTE ON FUNCTION sequin_cdc._start_backfill(bigint) TO mallory, eve;
	GRANT EXECUTE ON FUNCTION sequin_cdc._validate_backfill_where(regclass, text) TO mallory, eve;
});

sub bf_done
{
	my ($id) = @_;
	$node->poll_query_until('postgres',
		"SELECT state <> 'running' FROM sequin_cdc.backfills WHERE id = $id")
	  or diag("backfill $id still running");
	return qry("SELECT state || '|' || rows_processed || '|' || coalesce(last_error, '') "
		  . "FROM sequin_cdc.backfills WHERE id = $id");
}

sub reads { return qry("SELECT count(*) FROM sequin_cdc.changes WHERE action = 'read'"); }

# the C validator the SQL side uses (created here if the script lacks it)
qry(q{
	DO $$ BEGIN
	IF to_regprocedure('sequin_cdc._validate_backfill_where(regclass,text)') IS NULL THEN
		CREATE FUNCTION sequin_cdc._validate_backfill_where(source regclass, "where" text)
		RETURNS text LANGUAGE c STRICT AS '$libdir/sequin_cdc', 'sequin_cdc_validate_backfill_where';
	END IF;
	END $$;
});
like(qry("SELECT sequin_cdc._validate_backfill_where('big', 'id <= 50 AND t <> ''x'' AND now() > ''2000-01-01''')"),
	qr/^\(?\(t\.id <= 50\).*t\.t <> 'x'/, 'a valid condition comes back deparsed over t');
for my $bad ('true) OR (true', 'id > 0) UNION SELECT 1 FROM pg_authid WHERE (true',
	"public.imm('where', id) > 0", 'random() > 0.5', 'id IN (SELECT 1)')
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT sequin_cdc._validate_backfill_where('big', \$q\$$bad\$q\$)");
	like($err, qr/invalid backfill condition|syntax error/, "validator refuses: $bad");
}

# the injections of the issue, through the API: refused by backfill(), or
# else by the worker before it reads anything
for my $case ([ 'mallory', 'true) OR (true' ],
	[ 'postgres', 'id > 0) UNION SELECT 1 FROM pg_authid WHERE (true' ])
{
	my ($role, $bad) = @$case;
	my $before = reads();
	my ($rc, $id, $err) = $node->psql('postgres',
		"SELECT sequin_cdc.backfill('big', \"where\" => \$q\$$bad\$q\$, chunk_size => 1)",
		extra_params => [ '-U', $role ]);
	if ($rc != 0)
	{
		like($err, qr/invalid backfill condition|syntax error/, "backfill() refuses: $bad");
	}
	else
	{
		like(bf_done($id), qr/^failed\|0\|(invalid backfill condition|syntax error)/,
			"the worker refuses before reading: $bad");
	}
	is(reads(), $before, "no read rows: $bad");
}

# a condition with a stable function works, as the calling role
{
	my $id = as_role('mallory',
		"SELECT sequin_cdc.backfill('big', \"where\" => 'id <= 50 AND now() > ''2000-01-01''', chunk_size => 20)");
	is(bf_done($id), 'completed|50|', 'backfill with a condition completed');
	ok(SequinNode::wait_for_capture($node), 'read rows captured');
	is(qry("SELECT count(*) FROM sequin_cdc.changes WHERE action = 'read' AND source_table_name = 'big'"),
		'50', 'exactly the rows of the condition');
}

# the role loses SELECT (d1), or is dropped (d2), while the worker waits
# for a writer before its first chunk
for my $case ([ 'mallory', 'REVOKE SELECT ON big FROM mallory', qr/role "mallory" that started backfill \d+ may no longer read table "big"/ ],
	[ 'eve', 'DROP OWNED BY eve; DROP ROLE eve', qr/the role that started backfill \d+ \(OID \d+\) no longer exists/ ])
{
	my ($role, $sql, $want) = @$case;
	my $before = reads();
	my $writer = $node->background_psql('postgres');
	$writer->query_safe('BEGIN');
	$writer->query_safe('LOCK TABLE big IN ROW EXCLUSIVE MODE');
	my $id = as_role($role, "SELECT sequin_cdc.backfill('big', chunk_size => 10)");
	$node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'sequin_cdc backfill' AND wait_event_type = 'Lock'")
	  or diag('the backfill worker does not wait');
	qry($sql);
	$writer->query_safe('COMMIT');
	$writer->quit;
	my $st = bf_done($id);
	like($st, qr/^failed\|0\|/, "$role: the backfill fails and reads nothing");
	like($st, $want, "$role: with a message saying why");
	ok(SequinNode::wait_for_capture($node), "$role: capture goes on");
	is(reads(), $before, "$role: no read rows");
}
qry("GRANT SELECT ON big TO mallory");

# (e) the read runs as the caller, restricted: the table's row level
# security policy runs as mallory and cannot make her superuser
{
	as_role('mallory', q{
		CREATE TABLE mt (id bigint PRIMARY KEY, v int);
		ALTER TABLE mt REPLICA IDENTITY FULL;
		INSERT INTO mt SELECT g, g FROM generate_series(1, 5) g;
		CREATE FUNCTION pol() RETURNS bool LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM public.note('policy');
			RETURN true;
		END $$;
		CREATE POLICY p ON mt USING (pol());
		ALTER TABLE mt ENABLE ROW LEVEL SECURITY;
		ALTER TABLE mt FORCE ROW LEVEL SECURITY;
	});
	qry("ALTER PUBLICATION priv_pub ADD TABLE mt");
	qry(q{
		SELECT sequin_cdc.add_change_retention('mt');
		DELETE FROM who_log;
	});
	my $id = as_role('mallory', "SELECT sequin_cdc.backfill('mt')");
	is(bf_done($id), 'completed|5|', 'backfill of mallory\'s table completed');
	# backfill() itself may count the rows in mallory's own session; the
	# worker's session is the bootstrap superuser's
	is(qry("SELECT string_agg(DISTINCT who, ',') FROM who_log WHERE kind = 'policy' AND sess = 'postgres'"), 'mallory',
		'the policy ran in the backfill worker, as mallory');
	is(qry("SELECT count(*) FROM who_log WHERE err = 'ALTER ROLE succeeded'"), '0',
		'ALTER ROLE inside failed');
	is(superusers(), '', 'mallory is not superuser');
}

$node->stop;
done_testing();
