/*-------------------------------------------------------------------------
 *
 * sink_kafka.c
 *		Kafka sinks: the sink type that produces each change of a batch as
 *		one Kafka message with librdkafka, and the checks of a Kafka
 *		sink's configuration (create_kafka_sink() and every worker step).
 *
 * Kafka only: the sink worker (sink_worker.c) reads the batch, renders the
 * elements, saves the cursor and retries.  Here, one attempt produces
 * every change of the batch and waits for every delivery report:
 *	 - the message's value is the change's JSON element (what a webhook
 *	   body carries per change), its key the record's primary key (the
 *	   default: all changes of a row go to one partition, in order), its
 *	   table ("schema.table") or none; headers idempotency_key, action,
 *	   table and seq; its topic the sink's topic with {schema} and {table}
 *	   replaced by the change's (characters Kafka does not allow in topic
 *	   names become '_');
 *	 - the producer is idempotent (enable.idempotence, acks=all): the
 *	   broker keeps each message once and in order per partition, whatever
 *	   librdkafka retries;
 *	 - the batch is delivered when every message's delivery report says
 *	   so; otherwise the worker sends the same batch again after a backoff
 *	   (a broker that is down, a full queue, a timeout), or pauses the sink
 *	   when the producer has a fatal error or a message can never be
 *	   accepted (too large, invalid topic).
 * Delivery is at-least-once: a message acknowledged in a batch that is
 * retried (or whose cursor commit a crash loses) is sent again, with the
 * same idempotency_key header.  README ("Kafka sinks") says why not
 * exactly once.
 *
 * Properties are librdkafka's own, checked by librdkafka's own parser
 * (rd_kafka_conf_set, rd_kafka_new).  They hold secrets (sasl.password,
 * ssl.key.pem): their values appear in no error and no log line, and
 * librdkafka's log lines reach the server log only at warning level or
 * worse, through the worker's own thread (log.queue).  Properties that
 * name server files or programs (*.location, plugin.library.paths,
 * sasl.kerberos.kinit.cmd, ...) are for superuser-owned sinks only: the
 * worker runs as the server's operating system user.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/pmsignal.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "sink_worker.h"

PG_FUNCTION_INFO_V1(sequin_cdc_kafka_check_config);

/* Longest Kafka topic name */
#define KF_TOPIC_MAX			249
/* Default message.timeout.ms: how long one attempt may wait for a broker */
#define KF_MESSAGE_TIMEOUT_MS	"60000"
/* Property values shorter than this are not redacted from librdkafka's errors */
#define KF_REDACT_MIN_LEN		4

/* Properties whose values are never secret (kept in librdkafka's errors) */
static const char *const kf_not_secret[] = {
	"security.protocol", "sasl.mechanism", "sasl.mechanisms",
};
/* Poll interval while waiting for delivery reports */
#define KF_POLL_MS				100

/*
 * The sink's columns the Kafka type reads at every step (config_columns),
 * in this order; properties as two arrays, sorted by name.
 */
#define KF_CONFIG_COLUMNS \
	"s.kafka_brokers, s.kafka_topic, s.kafka_key, " \
	"ARRAY(SELECT p.key FROM pg_catalog.jsonb_each_text(s.kafka_properties) p ORDER BY p.key), " \
	"ARRAY(SELECT p.value FROM pg_catalog.jsonb_each_text(s.kafka_properties) p ORDER BY p.key), " \
	"COALESCE((SELECT r.rolsuper FROM pg_catalog.pg_roles r " \
	"WHERE r.oid OPERATOR(pg_catalog.=) s.owner::pg_catalog.oid), false)"
enum
{
	KF_CONFIG_BROKERS,
	KF_CONFIG_TOPIC,
	KF_CONFIG_KEY,
	KF_CONFIG_PROP_NAMES,
	KF_CONFIG_PROP_VALUES,
	KF_CONFIG_OWNER_IS_SUPERUSER,
};

typedef enum KafkaKeyMode
{
	KF_KEY_RECORD_PK,
	KF_KEY_TABLE,
	KF_KEY_NONE,
} KafkaKeyMode;

/* A sink's configuration, as read from its row or given to create_kafka_sink */
typedef struct KafkaConfig
{
	char	   *brokers;
	char	   *topic;
	KafkaKeyMode key;
	int			nprops;
	char	  **names;
	char	  **values;
	bool		superuser;		/* the sink's owner is a superuser */
} KafkaConfig;

/* A Kafka sink's state, in its worker */
typedef struct KafkaState
{
	MemoryContext cxt;			/* the worker's: lives as long as the state */
	rd_kafka_t *rk;				/* the producer, NULL until needed */
	char	   *rk_signature;	/* the configuration rk was made with (cxt) */
	KafkaConfig conf;			/* read at every step */
	/* the attempt in progress, updated by the callbacks (our thread only) */
	intptr_t	attempt;		/* each message's opaque */
	int			outstanding;	/* produced, no delivery report yet */
	int			failed;
	bool		permanent;		/* a message can never be delivered */
	char		error[SEQUIN_CDC_ERROR_LEN];	/* the first failure */
} KafkaState;

/* Properties the sink sets itself */
static const char *const kf_reserved[] = {
	"bootstrap.servers", "metadata.broker.list", "enable.idempotence",
	"acks", "request.required.acks", "transactional.id", "log.queue",
	"partitioner", "partitioner_cb", "dr_cb", "dr_msg_cb", "error_cb",
	"log_cb", "opaque", "enable.gapless.guarantee",
};

/*
 * Properties that name files, libraries or programs on the server (the
 * worker runs as the server's operating system user): superusers only.
 */
static const char *const kf_server_side[] = {
	"plugin.library.paths", "sasl.kerberos.kinit.cmd", "sasl.kerberos.keytab",
	"ssl.engine.location", "ssl.engine.id", "ssl.providers",
	"ssl.ca.certificate.stores", "ssl_engine_callback_data",
};

/* ----------------------------------------------------------------
 * Configuration checks
 * ----------------------------------------------------------------
 */

/* Is c allowed in a Kafka topic name? */
static bool
kf_topic_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

/*
 * Why the topic template is not usable, or NULL: Kafka's characters
 * around {schema} and {table}, its length limit without them.
 */
static const char *
kf_topic_problem(const char *topic)
{
	int			fixed = 0;

	if (topic[0] == '\0')
		return "it is empty";
	for (const char *p = topic; *p;)
	{
		if (*p == '{')
		{
			if (strncmp(p, "{schema}", 8) == 0)
				p += 8;
			else if (strncmp(p, "{table}", 7) == 0)
				p += 7;
			else
				return "it has a placeholder other than {schema} and {table}";
			continue;
		}
		if (!kf_topic_char(*p))
			return "it has a character Kafka does not allow in topic names (only letters, digits, '.', '_' and '-')";
		fixed++;
		p++;
	}
	if (fixed > KF_TOPIC_MAX)
		return "it is longer than 249 characters";
	if (strcmp(topic, ".") == 0 || strcmp(topic, "..") == 0)
		return "Kafka does not allow the topic names \".\" and \"..\"";
	return NULL;
}

/*
 * Why the broker list is not usable, or NULL: host:port[,host:port...],
 * the form bootstrap.servers takes.
 */
static const char *
kf_brokers_problem(const char *brokers)
{
	const char *p = brokers;

	if (*p == '\0')
		return "it is empty";
	for (;;)
	{
		const char *start = p;
		const char *colon = NULL;

		while (*p && *p != ',')
		{
			if (*p == ':')
				colon = p;
			else if (!(isalnum((unsigned char) *p) || *p == '.' || *p == '-' ||
					   *p == '_' || *p == '[' || *p == ']'))
				return "it has a character that is not part of a host:port list";
			p++;
		}
		if (p == start)
			return "it has an empty entry";
		if (colon == NULL || colon == start || colon + 1 == p)
			return "an entry is not host:port";
		for (const char *d = colon + 1; d < p; d++)
		{
			if (!isdigit((unsigned char) *d))
				return "a port is not a number";
		}
		if (atoi(colon + 1) < 1 || atoi(colon + 1) > 65535 || p - colon > 6)
			return "a port is not between 1 and 65535";
		if (*p == '\0')
			return NULL;
		p++;
	}
}

/* The key mode of its name; false if there is none of that name. */
static bool
kf_parse_key(const char *key, KafkaKeyMode *mode)
{
	if (strcmp(key, "record_pk") == 0)
		*mode = KF_KEY_RECORD_PK;
	else if (strcmp(key, "table") == 0)
		*mode = KF_KEY_TABLE;
	else if (strcmp(key, "none") == 0)
		*mode = KF_KEY_NONE;
	else
		return false;
	return true;
}

/*
 * librdkafka's message about a property with every property value of
 * the configuration taken out: values may be secrets, and librdkafka
 * quotes the value it refuses.
 */
static char *
kf_redact(const KafkaConfig *c, const char *msg)
{
	char	   *s = pstrdup(msg);

	for (int i = 0; i < c->nprops; i++)
	{
		size_t		len = strlen(c->values[i]);
		char	   *hit;

		bool		secret = len >= KF_REDACT_MIN_LEN;

		for (int n = 0; n < lengthof(kf_not_secret) && secret; n++)
			secret = strcmp(c->names[i], kf_not_secret[n]) != 0;
		if (!secret)
			continue;
		while ((hit = strstr(s, c->values[i])) != NULL)
		{
			StringInfoData b;

			initStringInfo(&b);
			appendBinaryStringInfo(&b, s, hit - s);
			appendStringInfoString(&b, "***");
			appendStringInfoString(&b, hit + len);
			s = b.data;
		}
	}
	/* and keep it on one line */
	for (char *p = s; *p; p++)
	{
		if ((unsigned char) *p < 0x20)
			*p = ' ';
	}
	return s;
}

/* Is this property reserved to superusers (a server file or program)? */
static bool
kf_server_side_property(const char *name)
{
	size_t		len = strlen(name);

	if (len >= 9 && strcmp(name + len - 9, ".location") == 0)
		return true;
	for (int i = 0; i < lengthof(kf_server_side); i++)
	{
		if (strcmp(name, kf_server_side[i]) == 0)
			return true;
	}
	return false;
}

/*
 * librdkafka's log lines until the worker's producer exists (a check at
 * create time): none, in particular not on the server's standard error.
 */
static void
kf_log_drop(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
}

/*
 * The worker's producer's log lines, served by rd_kafka_poll (log.queue),
 * in the worker's thread: warnings and worse go to the server log, with
 * property values taken out.
 */
static void
kf_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	KafkaState *st = (KafkaState *) rd_kafka_opaque(rk);

	if (level <= 4)
		ereport(LOG,
				(errmsg("sequin_cdc kafka producer: %s: %s", fac,
						kf_redact(&st->conf, buf))));
}

/*
 * The producer configuration of a sink: our settings, the user's
 * properties (checked by librdkafka), idempotence.  Errors (with
 * errcode and hint, and no property value) on a bad one; sink_name is
 * for the messages, NULL at create time.
 */
static rd_kafka_conf_t *
kf_build_conf(const KafkaConfig *c, const char *sink_name)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char		errstr[512];
	const char *what = sink_name ? psprintf("sink \"%s\": ", sink_name) : "";
	const char *problem;

#define KF_SET(name, value) \
	do { \
		if (rd_kafka_conf_set(conf, (name), (value), errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) \
			elog(ERROR, "librdkafka refuses %s: %s", (name), errstr); \
	} while (0)

	if ((problem = kf_brokers_problem(c->brokers)) != NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%sinvalid Kafka brokers \"%s\": %s", what, c->brokers, problem),
				 errhint("Give the bootstrap brokers as host:port, separated by commas, e.g. 'kafka1:9092,kafka2:9092'.")));
	}
	KF_SET("bootstrap.servers", c->brokers);
	KF_SET("message.timeout.ms", KF_MESSAGE_TIMEOUT_MS);
	KF_SET("client.id", "sequin_cdc");

	for (int i = 0; i < c->nprops; i++)
	{
		const char *name = c->names[i];
		rd_kafka_conf_res_t res;

		for (int r = 0; r < lengthof(kf_reserved); r++)
		{
			if (strcmp(name, kf_reserved[r]) == 0)
			{
				rd_kafka_conf_destroy(conf);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%sKafka property \"%s\" is set by sequin_cdc", what, name),
						 errhint("Give brokers as the brokers argument; the producer is always idempotent with acks=all and partitions by key.")));
			}
		}
		if (kf_server_side_property(name) && !c->superuser)
		{
			rd_kafka_conf_destroy(conf);
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("%sKafka property \"%s\" is reserved to superusers", what, name),
					 errdetail("It names a file, library or program of the database server."),
					 errhint("Use the inline forms (ssl.ca.pem, ssl.certificate.pem, ssl.key.pem), or ask a superuser to create the sink.")));
		}
		res = rd_kafka_conf_set(conf, name, c->values[i], errstr, sizeof(errstr));
		if (res != RD_KAFKA_CONF_OK)
		{
			rd_kafka_conf_destroy(conf);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 res == RD_KAFKA_CONF_UNKNOWN ?
					 errmsg("%sunknown Kafka property \"%s\"", what, name) :
					 errmsg("%sinvalid value for Kafka property \"%s\"", what, name),
					 errdetail("librdkafka: %s", kf_redact(c, errstr)),
					 errhint("properties are librdkafka's (see its CONFIGURATION.md), e.g. '{\"security.protocol\": \"SASL_SSL\", \"sasl.mechanism\": \"PLAIN\"}'.")));
		}
	}
	KF_SET("enable.idempotence", "true");
	KF_SET("acks", "all");
	KF_SET("log.queue", "true");
	rd_kafka_conf_set_log_cb(conf, kf_log_drop);
#undef KF_SET
	return conf;
}

/*
 * rd_kafka_new over a configuration (which it takes); errors like
 * kf_build_conf's, for what only a whole configuration can tell (an
 * idempotence limit, a missing file, an unsupported mechanism).
 */
static rd_kafka_t *
kf_new_producer(const KafkaConfig *c, rd_kafka_conf_t *conf, const char *sink_name)
{
	char		errstr[512];
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));

	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%sinvalid Kafka producer configuration",
						sink_name ? psprintf("sink \"%s\": ", sink_name) : ""),
				 errdetail("librdkafka: %s", kf_redact(c, errstr)),
				 errhint("Check properties against librdkafka's CONFIGURATION.md.")));
	}
	return rk;
}

/* The strings of a text[] (no nulls: they come from jsonb_each_text) */
static char **
kf_text_array(Datum a, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	deconstruct_array(DatumGetArrayTypeP(a), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
		out[i] = nulls[i] ? pstrdup("") : TextDatumGetCString(elems[i]);
	return out;
}

/*
 * _kafka_check_config(brokers, topic, key, names text[], values text[])
 * for create_kafka_sink(): errors unless librdkafka accepts the
 * configuration, as the current user (the sink's owner-to-be).  Creates
 * and destroys a producer, which connects to nobody.
 */
Datum
sequin_cdc_kafka_check_config(PG_FUNCTION_ARGS)
{
	KafkaConfig c;
	const char *problem;
	int			nvalues;
	rd_kafka_conf_t *conf;

	memset(&c, 0, sizeof(c));
	c.brokers = text_to_cstring(PG_GETARG_TEXT_PP(0));
	c.topic = text_to_cstring(PG_GETARG_TEXT_PP(1));
	c.names = kf_text_array(PG_GETARG_DATUM(3), &c.nprops);
	c.values = kf_text_array(PG_GETARG_DATUM(4), &nvalues);
	if (nvalues != c.nprops)
		elog(ERROR, "property names and values differ in number");
	c.superuser = superuser();

	if ((problem = kf_topic_problem(c.topic)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Kafka topic \"%s\": %s", c.topic, problem),
				 errhint("Give a topic name, e.g. 'orders', or a template with {schema} and {table}, e.g. '{schema}.{table}'.")));
	if (!kf_parse_key(text_to_cstring(PG_GETARG_TEXT_PP(2)), &c.key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Kafka key \"%s\"", text_to_cstring(PG_GETARG_TEXT_PP(2))),
				 errhint("key is 'record_pk' (the default: the changes of a row stay in order), 'table' or 'none'.")));

	conf = kf_build_conf(&c, NULL);
	rd_kafka_destroy(kf_new_producer(&c, conf, NULL));
	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * The sink type
 * ----------------------------------------------------------------
 */

/* Has the worker been asked to stop (or lost its postmaster)? */
static bool
kf_stop_requested(void)
{
	return ProcDiePending || QueryCancelPending || !PostmasterIsAlive();
}

/* Can a message that failed with err never be accepted? */
static bool
kf_permanent_error(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
		err == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION ||
		err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE ||
		err == RD_KAFKA_RESP_ERR__INVALID_ARG ||
		err == RD_KAFKA_RESP_ERR__FATAL;
}

/* Keep the first failure of an attempt, for last_error. */
static void
kf_fail(KafkaState *st, rd_kafka_resp_err_t err, const char *what)
{
	st->failed++;
	if (kf_permanent_error(err))
		st->permanent = true;
	if (st->error[0] == '\0')
		snprintf(st->error, sizeof(st->error), "%s: %s", what, rd_kafka_err2str(err));
}

/*
 * The delivery report of one message, served by rd_kafka_poll in the
 * worker's thread.  Reports of an earlier attempt are not counted.
 */
static void
kf_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	KafkaState *st = (KafkaState *) opaque;

	if ((intptr_t) m->_private != st->attempt)
		return;
	st->outstanding--;
	if (m->err)
		kf_fail(st, m->err, "delivery failed");
}

/*
 * librdkafka's errors that are not about one message (all brokers down,
 * authentication), served by rd_kafka_poll: kept for last_error when the
 * attempt fails.
 */
static void
kf_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	KafkaState *st = (KafkaState *) opaque;

	if (st->error[0] == '\0' && st->outstanding > 0)
		snprintf(st->error, sizeof(st->error), "%s", reason);
}


/* SinkType.create: the state; the producer is made at the first delivery. */
static void *
kf_create(const SinkConfig *sink, MemoryContext cxt)
{
	KafkaState *st = MemoryContextAllocZero(cxt, sizeof(KafkaState));

	st->cxt = cxt;
	return st;
}

/*
 * SinkType.load_config: brokers, topic, key and properties of the sink,
 * checked again (the row may have been changed since it was created,
 * and its owner's rights too).
 */
static void
kf_load_config(void *state, const SinkConfig *sink, HeapTuple t, TupleDesc d,
			   int first_column)
{
	KafkaState *st = (KafkaState *) state;
	KafkaConfig *c = &st->conf;
	bool		isnull;
	char	   *key;
	int			nvalues;

	memset(c, 0, sizeof(*c));
	c->brokers = SPI_getvalue(t, d, first_column + KF_CONFIG_BROKERS);
	c->topic = SPI_getvalue(t, d, first_column + KF_CONFIG_TOPIC);
	key = SPI_getvalue(t, d, first_column + KF_CONFIG_KEY);
	if (c->brokers == NULL || c->topic == NULL || key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink \"%s\" has no Kafka brokers, topic or key", sink->name),
				 errhint("Drop the sink and create it again with sequin_cdc.create_kafka_sink().")));
	c->names = kf_text_array(SPI_getbinval(t, d, first_column + KF_CONFIG_PROP_NAMES, &isnull), &c->nprops);
	c->values = kf_text_array(SPI_getbinval(t, d, first_column + KF_CONFIG_PROP_VALUES, &isnull), &nvalues);
	c->superuser = DatumGetBool(SPI_getbinval(t, d, first_column + KF_CONFIG_OWNER_IS_SUPERUSER, &isnull)) && !isnull;
	if (nvalues != c->nprops)
		elog(ERROR, "property names and values differ in number");
	if (kf_topic_problem(c->topic) != NULL || !kf_parse_key(key, &c->key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink \"%s\" has an invalid Kafka topic or key", sink->name),
				 errhint("Drop the sink and create it again with sequin_cdc.create_kafka_sink().")));
	/* brokers and properties, for the owner's rights of now */
	rd_kafka_conf_destroy(kf_build_conf(c, sink->name));
}

/*
 * The configuration a producer is made with, as one string (each part
 * prefixed by its length): the producer is made again when it changes.
 */
static char *
kf_signature(const KafkaConfig *c)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfo(&b, "%d:%zu:%s", (int) c->superuser, strlen(c->brokers), c->brokers);
	for (int i = 0; i < c->nprops; i++)
		appendStringInfo(&b, "%zu:%s%zu:%s", strlen(c->names[i]), c->names[i],
						 strlen(c->values[i]), c->values[i]);
	return b.data;
}

/* Close the producer, dropping what it still holds. */
static void
kf_close(KafkaState *st)
{
	if (st->rk == NULL)
		return;
	(void) rd_kafka_purge(st->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_destroy(st->rk);
	st->rk = NULL;
	if (st->rk_signature)
		pfree(st->rk_signature);
	st->rk_signature = NULL;
}

/*
 * The producer for the sink's configuration: the one the worker has, or
 * a new one if there is none or the configuration changed.  Errors on a
 * configuration librdkafka refuses.
 */
static void
kf_open(KafkaState *st, const SinkConfig *sink)
{
	char	   *sig = kf_signature(&st->conf);
	rd_kafka_conf_t *conf;

	if (st->rk != NULL && strcmp(sig, st->rk_signature) == 0)
		return;
	kf_close(st);
	conf = kf_build_conf(&st->conf, sink->name);
	rd_kafka_conf_set_opaque(conf, st);
	rd_kafka_conf_set_dr_msg_cb(conf, kf_dr_cb);
	rd_kafka_conf_set_error_cb(conf, kf_error_cb);
	rd_kafka_conf_set_log_cb(conf, kf_log_cb);
	st->rk = kf_new_producer(&st->conf, conf, sink->name);
	/* log lines are served by rd_kafka_poll, in this thread */
	(void) rd_kafka_set_log_queue(st->rk, NULL);
	st->rk_signature = MemoryContextStrdup(st->cxt, sig);
}

/*
 * The topic of a change: the sink's topic with {schema} and {table}
 * replaced, characters Kafka does not allow becoming '_'.  NULL if it is
 * too long.
 */
static char *
kf_topic(const char *template, const SinkChange *ch)
{
	StringInfoData b;

	initStringInfo(&b);
	for (const char *p = template; *p;)
	{
		const char *part = NULL;

		if (strncmp(p, "{schema}", 8) == 0)
		{
			part = ch->schema ? ch->schema : "";
			p += 8;
		}
		else if (strncmp(p, "{table}", 7) == 0)
		{
			part = ch->table ? ch->table : "";
			p += 7;
		}
		else
		{
			appendStringInfoChar(&b, *p++);
			continue;
		}
		for (; *part; part++)
			appendStringInfoChar(&b, kf_topic_char(*part) ? *part : '_');
	}
	return b.len <= KF_TOPIC_MAX ? b.data : NULL;
}

/* The headers of a change's message: idempotency_key, action, table, seq. */
static rd_kafka_headers_t *
kf_headers(const SinkChange *ch)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(4);
	char		seq[32];
	char	   *table = psprintf("%s.%s", ch->schema ? ch->schema : "",
								 ch->table ? ch->table : "");

	snprintf(seq, sizeof(seq), INT64_FORMAT, ch->seq);
	if (ch->idempotency_key)
		rd_kafka_header_add(h, "idempotency_key", -1, ch->idempotency_key, -1);
	if (ch->action)
		rd_kafka_header_add(h, "action", -1, ch->action, -1);
	rd_kafka_header_add(h, "table", -1, table, -1);
	rd_kafka_header_add(h, "seq", -1, seq, -1);
	return h;
}

/*
 * Produce one change's message, waiting while librdkafka's queue is full.
 * False if it was not queued: the failure is kept in st.
 */
static bool
kf_produce(KafkaState *st, const SinkBatch *batch, const SinkChange *ch)
{
	char	   *topic = kf_topic(st->conf.topic, ch);
	const char *key = NULL;
	char	   *table_key = NULL;
	void	   *value = batch->elements.data + ch->element_offset;

	if (topic == NULL)
	{
		st->failed++;
		st->permanent = true;
		snprintf(st->error, sizeof(st->error),
				 "the topic of seq " INT64_FORMAT " is longer than 249 characters", ch->seq);
		return false;
	}
	if (st->conf.key == KF_KEY_RECORD_PK)
		key = ch->record_pk;
	else if (st->conf.key == KF_KEY_TABLE)
		key = table_key = psprintf("%s.%s", ch->schema ? ch->schema : "",
								   ch->table ? ch->table : "");

	for (;;)
	{
		rd_kafka_headers_t *h = kf_headers(ch);
		rd_kafka_resp_err_t err;

		err = rd_kafka_producev(st->rk,
								RD_KAFKA_V_TOPIC(topic),
								RD_KAFKA_V_KEY((const void *) key, key ? strlen(key) : 0),
								RD_KAFKA_V_VALUE(value, (size_t) ch->element_len),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_HEADERS(h),
								RD_KAFKA_V_OPAQUE((void *) st->attempt),
								RD_KAFKA_V_END);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			st->outstanding++;
			break;
		}
		rd_kafka_headers_destroy(h);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || kf_stop_requested())
		{
			kf_fail(st, err, "could not produce");
			return false;
		}
		/* the queue is full: serve delivery reports, then try again */
		(void) rd_kafka_poll(st->rk, KF_POLL_MS);
	}
	pfree(topic);
	if (table_key)
		pfree(table_key);
	return true;
}

/*
 * SinkType.deliver: produce every change of the batch, then wait for
 * every delivery report; no transaction is open.  Delivered when all
 * succeeded; a retry otherwise, or fatal when the producer has a fatal
 * error or a message can never be accepted.
 */
static void
kf_deliver(void *state, const SinkConfig *sink, const SinkBatch *batch,
		   SinkResult *r)
{
	KafkaState *st = (KafkaState *) state;
	char		fatal[256];

	kf_open(st, sink);
	st->attempt++;
	st->outstanding = 0;
	st->failed = 0;
	st->permanent = false;
	st->error[0] = '\0';

	pgstat_report_activity(STATE_RUNNING, "producing a batch");
	for (int i = 0; i < batch->nchanges && st->failed == 0; i++)
	{
		if (!kf_produce(st, batch, &batch->changes[i]))
			break;
		(void) rd_kafka_poll(st->rk, 0);
	}
	/*
	 * Every message queued has its report before the next attempt, unless
	 * the producer can no longer send anything (a fatal error).
	 */
	while (st->outstanding > 0 && !kf_stop_requested() &&
		   rd_kafka_fatal_error(st->rk, NULL, 0) == RD_KAFKA_RESP_ERR_NO_ERROR)
		(void) rd_kafka_poll(st->rk, KF_POLL_MS);

	r->outcome = SINK_RETRY;
	if (rd_kafka_fatal_error(st->rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		r->outcome = SINK_FATAL;
		snprintf(r->error, sizeof(r->error), "fatal Kafka producer error: %s",
				 kf_redact(&st->conf, fatal));
		kf_close(st);
		return;
	}
	if (st->outstanding > 0)
	{
		snprintf(r->error, sizeof(r->error), "interrupted with %d messages unacknowledged",
				 st->outstanding);
		return;
	}
	if (st->failed == 0)
	{
		r->outcome = SINK_DELIVERED;
		return;
	}
	if (st->permanent)
		r->outcome = SINK_FATAL;
	snprintf(r->error, sizeof(r->error), "%d of %d messages not acknowledged: %s",
			 st->failed, batch->nchanges, kf_redact(&st->conf, st->error));
}

/* SinkType.destroy: close the producer. */
static void
kf_destroy(void *state)
{
	kf_close((KafkaState *) state);
}

const SinkType sequin_cdc_kafka_sink_type = {
	.name = "kafka",
	.config_columns = KF_CONFIG_COLUMNS,
	.create = kf_create,
	.load_config = kf_load_config,
	.deliver = kf_deliver,
	.destroy = kf_destroy,
};
