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
	src/change_buffer.o \
	src/change_writer.o \
	src/filter.o \
	src/backfill.o \
	src/api.o \
	src/run_as.o \
	src/sink_webhook.o

EXTENSION = sequin_cdc
EXTVERSION = 0.3.0
# The install script of the current version is joined from sql/src/NN_*.sql
# (one subsystem a piece), as pg_cron builds its own; like every released
# script it is committed. Upgrade scripts are written by hand.
SQL_PIECES = $(sort $(wildcard sql/src/*.sql))
SQL_SCRIPT = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(sort $(wildcard sql/$(EXTENSION)--*.sql) $(SQL_SCRIPT))
PGFILEDESC = "sequin_cdc - change data capture into change tables"

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -lcurl

# pg_regress: inputs in test/sql, expected output in the top-level expected/
REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
REGRESS_OPTS = --inputdir=test --load-extension=sequin_cdc
TAP_TESTS = 1

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS runs TAP tests from ./t; ours live in test/t
PROVE_TESTS = test/t/*.pl

# every object depends on every header (PGXS tracks no header dependencies)
$(OBJS): $(wildcard src/*.h)

all: $(SQL_SCRIPT)

$(SQL_SCRIPT): $(SQL_PIECES)
	cat $(SQL_PIECES) > $@

# Fails when the committed install script is not what the pieces join to.
sql-check:
	cat $(SQL_PIECES) | cmp - $(SQL_SCRIPT)

.PHONY: sql-check
