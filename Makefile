# sequin_cdc: PGXS build
MODULE_big = sequin_cdc
OBJS = \
	src/sequin_cdc.o \
	src/shmem.o \
	src/workers.o \
	src/launcher.o \
	src/capture.o \
	src/output_plugin.o \
	src/plugin_relcache.o \
	src/backfill_window.o \
	src/row_json.o \
	src/parked.o \
	src/change_buffer.o \
	src/change_writer.o \
	src/filter.o \
	src/backfill.o \
	src/api.o \
	src/ddl_guard.o \
	src/run_as.o \
	src/sink_api.o \
	src/sink_worker.o \
	src/sink_webhook.o \
	src/sink_kafka.o

EXTENSION = sequin_cdc
EXTVERSION = 0.4.0
# The install script of the current version is joined from sql/src/NN_*.sql
# (one subsystem a piece), as pg_cron builds its own; like every released
# script it is committed. Upgrade scripts are written by hand.
SQL_PIECES = $(sort $(wildcard sql/src/*.sql))
SQL_SCRIPT = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(sort $(wildcard sql/$(EXTENSION)--*.sql) $(SQL_SCRIPT))
PGFILEDESC = "sequin_cdc - change data capture into change tables"

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -lcurl -lrdkafka

# pg_regress: inputs in test/sql, expected output in the top-level expected/.
# `make installcheck` runs them on a temporary server of pg_regress's own
# (--temp-instance, started from the installed binaries, so `make install`
# first), configured by test/lib/*.conf (--temp-config). Tests that need
# pg_cron or pg_partman are left out, with a note, when the server has none.
REGRESS_ALL = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
REGRESS_NEED_PG_CRON = retention retention_partman
REGRESS_NEED_PG_PARTMAN = retention_partman
REGRESS_SKIPPED = $(if $(HAVE_PG_CRON),,$(REGRESS_NEED_PG_CRON)) $(if $(HAVE_PG_PARTMAN),,$(REGRESS_NEED_PG_PARTMAN))
REGRESS = $(filter-out $(REGRESS_SKIPPED),$(REGRESS_ALL))
# REGRESS_EXTRA_CONF: one more file, read last (test/run.sh: the server's
# log into a directory that outlives the temporary instance, for its TRAP check).
REGRESS_CONF = test/lib/sequin.conf \
	$(if $(HAVE_PG_CRON),test/lib/pg_cron.conf) \
	$(if $(HAVE_OUTPUT_PLUGIN_LIBRARIES),test/lib/output_plugins.conf) \
	$(REGRESS_EXTRA_CONF)
REGRESS_OPTS = --inputdir=test --load-extension=sequin_cdc \
	--temp-instance=./tmp_check_regress $(addprefix --temp-config=,$(REGRESS_CONF))
ENCODING = UTF8
NO_LOCALE = 1
TAP_TESTS = 1

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS runs TAP tests from ./t; ours live in test/t
PROVE_TESTS = test/t/*.pl
EXTRA_CLEAN = tmp_check_regress/

# What the target server has (read when a test target runs, not at parse time).
HAVE_PG_CRON = $(wildcard $(DESTDIR)$(pkglibdir)/pg_cron.so)
HAVE_PG_PARTMAN = $(wildcard $(DESTDIR)$(datadir)/extension/pg_partman.control)
HAVE_OUTPUT_PLUGIN_LIBRARIES = $(shell '$(bindir)/postgres' --describe-config 2>/dev/null | grep '^output_plugin_libraries[[:space:]]')

# Say which regression tests are left out, and why (unless REGRESS was given).
installcheck: regress-skip-note
.PHONY: regress-skip-note
regress-skip-note:
	@$(if $(and $(filter file,$(origin REGRESS)),$(strip $(REGRESS_SKIPPED))),echo "NOTE: skipping regression tests $(sort $(REGRESS_SKIPPED)):$(if $(HAVE_PG_CRON),, pg_cron)$(if $(HAVE_PG_PARTMAN),, pg_partman) not installed for this server",true)

# every object depends on every header (PGXS tracks no header dependencies)
$(OBJS): $(wildcard src/*.h)

all: $(SQL_SCRIPT)

$(SQL_SCRIPT): $(SQL_PIECES)
	cat $(SQL_PIECES) > $@

# Fails when the committed install script is not what the pieces join to.
sql-check:
	cat $(SQL_PIECES) | cmp - $(SQL_SCRIPT)

.PHONY: sql-check
