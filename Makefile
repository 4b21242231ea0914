# sequin_cdc: PGXS build
MODULE_big = sequin_cdc
OBJS = \
	src/sequin_cdc.o \
	src/launcher.o \
	src/capture.o \
	src/decode.o \
	src/row_json.o \
	src/change_buffer.o \
	src/change_writer.o \
	src/filter.o \
	src/backfill.o \
	src/api.o \
	src/run_as.o \
	src/sink_api.o \
	src/sink_worker.o \
	src/sink_webhook.o

EXTENSION = sequin_cdc
DATA = $(wildcard sql/sequin_cdc--*.sql)
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
