/*-------------------------------------------------------------------------
 *
 * sink_webhook.c
 *		Webhook sinks: the sink type that POSTs each batch, as
 *		{"data": [element, ...]}, to an HTTP endpoint with libcurl; and
 *		the URL checks of create_webhook_sink() and pg_stat_sinks.
 *
 * HTTP only: the sink worker (sink_worker.c) reads the batch, renders the
 * elements, saves the cursor and retries.  Here, one POST per attempt:
 * 2xx is a delivery; any other status, a timeout, a connection or TLS
 * error is a failure to retry (redirects are not followed).  Every
 * attempt at one batch sends the same bytes with the same Idempotency-Key
 * (sink id, replay epoch, first and last seq), so receivers can dedupe.
 * TLS verification is always on.
 *
 * Everything of a sink lives in its WebhookState, owned by its worker:
 * one curl handle for the worker's life (its connection is kept alive),
 * the configuration read at every step, and the start of a response.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/pmsignal.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "sink_webhook.h"
#include "sink_worker.h"

/* Longest connect phase of a request (the whole request: timeout_ms) */
#define WH_CONNECT_TIMEOUT_MS	10000
/* Bytes of an error response kept for last_error */
#define WH_RESPONSE_KEEP		200

#define WH_USER_AGENT			"sequin_cdc/0.1.0"

/*
 * The sink's columns the webhook reads at every step (config_columns),
 * in this order; headers as "Name: value" lines, sorted by name.
 */
#define WH_CONFIG_COLUMNS \
	"s.url, s.timeout_ms, " \
	"ARRAY(SELECT pg_catalog.concat(h.key, ': ', h.value) " \
	"FROM pg_catalog.jsonb_each_text(s.headers) h ORDER BY h.key)"
enum
{
	WH_CONFIG_URL,
	WH_CONFIG_TIMEOUT_MS,
	WH_CONFIG_HEADERS,
};

/* A webhook sink's state, in its worker */
typedef struct WebhookState
{
	CURL	   *curl;
	char		errbuf[CURL_ERROR_SIZE];
	char		response[WH_RESPONSE_KEEP + 1];	/* start of the response */
	size_t		response_len;
	/* the configuration, read at every step */
	char	   *url;
	int			timeout_ms;
	int			nheaders;
	char	  **headers;		/* "Name: value" */
	bool		user_content_type;	/* one of them is Content-Type */
} WebhookState;

/* ----------------------------------------------------------------
 * URLs
 * ----------------------------------------------------------------
 */

/*
 * Why url is not a usable webhook URL, or NULL: create_webhook_sink()
 * refuses such URLs, and a worker will not send to one.
 */
const char *
sequin_cdc_webhook_url_problem(const char *url)
{
	CURLU	   *h;
	CURLUcode	rc;
	char	   *host = NULL;
	const char *problem = NULL;

	if (pg_strncasecmp(url, "http://", 7) != 0 && pg_strncasecmp(url, "https://", 8) != 0)
		return "it does not start with http:// or https://";
	if (strpbrk(url, " \t\r\n") != NULL)
		return "it contains white space";

	h = curl_url();
	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	rc = curl_url_set(h, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
		problem = pstrdup(curl_url_strerror(rc));
	else if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
			 host == NULL || host[0] == '\0')
		problem = "it has no host";
	curl_free(host);
	curl_url_cleanup(h);
	return problem;
}

/*
 * scheme://host[:port]/path of url, without user information, query or
 * fragment, which often carry credentials; NULL if it does not parse.
 */
char *
sequin_cdc_webhook_endpoint(const char *url)
{
	CURLU	   *h = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *port = NULL;
	char	   *path = NULL;
	char	   *result = NULL;

	if (h == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (curl_url_set(h, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		(void) curl_url_get(h, CURLUPART_PORT, &port, 0);
		(void) curl_url_get(h, CURLUPART_PATH, &path, 0);
		result = psprintf("%s://%s%s%s%s", scheme, host,
						  port ? ":" : "", port ? port : "", path ? path : "/");
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(h);
	return result;
}

/* ----------------------------------------------------------------
 * The sink type
 * ----------------------------------------------------------------
 */

/* Keep the start of the response, for the error of a failed request. */
static size_t
wh_write_cb(char *data, size_t size, size_t nmemb, void *userdata)
{
	WebhookState *st = (WebhookState *) userdata;
	size_t		len = size * nmemb;
	size_t		keep = Min(len, WH_RESPONSE_KEEP - st->response_len);

	memcpy(st->response + st->response_len, data, keep);
	st->response_len += keep;
	st->response[st->response_len] = '\0';
	return len;
}

/* Abort the transfer when the worker must stop or be cancelled. */
static int
wh_progress_cb(void *p, curl_off_t dltotal, curl_off_t dlnow,
			   curl_off_t ultotal, curl_off_t ulnow)
{
	if (ProcDiePending || QueryCancelPending || !PostmasterIsAlive())
		return 1;
	return 0;
}

/* SinkType.create: the state, with a curl handle for the worker's life. */
static void *
wh_create(const SinkConfig *sink, MemoryContext cxt)
{
	WebhookState *st = MemoryContextAllocZero(cxt, sizeof(WebhookState));
	CURL	   *h;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
		(h = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not initialize libcurl")));

	/* one handle for the worker's life: its connection is kept alive */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_USERAGENT, WH_USER_AGENT);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, st->errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, wh_write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, st);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, wh_progress_cb);
	st->curl = h;
	return st;
}

/* A header line from the row is sent only if it cannot break the request. */
static bool
wh_header_line_ok(const char *line)
{
	const char *colon = strchr(line, ':');

	if (colon == NULL || colon == line)
		return false;
	for (const char *p = line; p < colon; p++)
	{
		if (!(isalnum((unsigned char) *p) || strchr("!#$%&'*+-.^_`|~", *p)))
			return false;
	}
	return strpbrk(line, "\r\n") == NULL;
}

/*
 * SinkType.load_config: the URL, timeout and header lines of the sink,
 * checked again (the row may have been changed since it was created).
 */
static void
wh_load_config(void *state, const SinkConfig *sink, HeapTuple t, TupleDesc d,
			   int first_column)
{
	WebhookState *st = (WebhookState *) state;
	bool		isnull;
	Datum		v;

	st->url = SPI_getvalue(t, d, first_column + WH_CONFIG_URL);
	st->timeout_ms = DatumGetInt32(SPI_getbinval(t, d, first_column + WH_CONFIG_TIMEOUT_MS, &isnull));
	v = SPI_getbinval(t, d, first_column + WH_CONFIG_HEADERS, &isnull);
	st->nheaders = 0;
	st->headers = NULL;
	st->user_content_type = false;
	if (!isnull)
	{
		Datum	   *elems;
		bool	   *enulls;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(v), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &enulls, &n);
		st->headers = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			char	   *line;

			if (enulls[i])
				continue;
			line = TextDatumGetCString(elems[i]);
			if (!wh_header_line_ok(line))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("sink \"%s\" has an invalid header", sink->name),
						 errhint("Header names are HTTP tokens and values have no line breaks; drop the sink and create it again with valid headers.")));
			if (pg_strncasecmp(line, "content-type:", 13) == 0)
				st->user_content_type = true;
			st->headers[st->nheaders++] = line;
		}
	}
	if (sequin_cdc_webhook_url_problem(st->url) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sink \"%s\" has an invalid URL", sink->name),
				 errhint("Drop the sink and create it again with an http:// or https:// URL.")));
}

/* Keep printable ASCII of an error response, on one line. */
static void
wh_clean_text(char *s)
{
	for (; *s; s++)
	{
		if ((unsigned char) *s < 0x20 || (unsigned char) *s >= 0x7f)
			*s = ' ';
	}
}

/*
 * The request's header list: ours, then the sink's.  The caller frees it
 * with curl_slist_free_all.
 */
static struct curl_slist *
wh_request_headers(WebhookState *st, const SinkConfig *sink, const SinkBatch *batch)
{
	struct curl_slist *h = NULL;
	struct curl_slist *next;
	char		line[128];
	bool		oom = false;

#define ADD_HEADER(s) \
	do { \
		next = curl_slist_append(h, (s)); \
		if (next == NULL) oom = true; else h = next; \
	} while (0)

	if (!st->user_content_type)
		ADD_HEADER("Content-Type: application/json");
	ADD_HEADER("Expect:");		/* no 100-continue round trip */
	snprintf(line, sizeof(line), "Idempotency-Key: " INT64_FORMAT "-%d-" INT64_FORMAT "-" INT64_FORMAT,
			 sink->id, (int) sink->epoch, batch->first_seq, batch->last_seq);
	ADD_HEADER(line);
	for (int i = 0; i < st->nheaders; i++)
		ADD_HEADER(st->headers[i]);
#undef ADD_HEADER
	if (oom)
	{
		curl_slist_free_all(h);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	return h;
}

/*
 * SinkType.deliver: POST {"data": [elements]}; no transaction is open.
 * 2xx is a delivery, anything else a failure to retry.
 */
static void
wh_deliver(void *state, const SinkConfig *sink, const SinkBatch *batch,
		   SinkResult *r)
{
	WebhookState *st = (WebhookState *) state;
	struct curl_slist *h = wh_request_headers(st, sink, batch);
	StringInfoData body;
	CURLcode	res;

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"data\":[");
	appendBinaryStringInfo(&body, batch->elements.data, batch->elements.len);
	appendStringInfoString(&body, "]}");

	curl_easy_setopt(st->curl, CURLOPT_URL, st->url);
	curl_easy_setopt(st->curl, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(st->curl, CURLOPT_POSTFIELDS, body.data);
	curl_easy_setopt(st->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body.len);
	curl_easy_setopt(st->curl, CURLOPT_TIMEOUT_MS, (long) st->timeout_ms);
	curl_easy_setopt(st->curl, CURLOPT_CONNECTTIMEOUT_MS,
					 (long) Min(st->timeout_ms, WH_CONNECT_TIMEOUT_MS));
	st->errbuf[0] = '\0';
	st->response_len = 0;
	st->response[0] = '\0';

	pgstat_report_activity(STATE_RUNNING, "posting a batch");
	res = curl_easy_perform(st->curl);
	curl_easy_setopt(st->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(h);

	r->outcome = SINK_RETRY;
	if (res != CURLE_OK)
	{
		snprintf(r->error, sizeof(r->error), "%s%s%s", curl_easy_strerror(res),
				 st->errbuf[0] ? ": " : "", st->errbuf);
		wh_clean_text(r->error);
		return;
	}
	r->responded = true;
	curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->status >= 200 && r->status < 300)
	{
		r->outcome = SINK_DELIVERED;
		return;
	}
	wh_clean_text(st->response);
	snprintf(r->error, sizeof(r->error), "HTTP %ld%s%s%s", r->status,
			 r->status >= 300 && r->status < 400 ? " (redirects are not followed)" : "",
			 st->response_len > 0 ? ": " : "", st->response);
}

/* SinkType.destroy: close the connection. */
static void
wh_destroy(void *state)
{
	WebhookState *st = (WebhookState *) state;

	curl_easy_cleanup(st->curl);
	st->curl = NULL;
}

const SinkType sequin_cdc_webhook_sink_type = {
	.name = "webhook",
	.config_columns = WH_CONFIG_COLUMNS,
	.create = wh_create,
	.load_config = wh_load_config,
	.deliver = wh_deliver,
	.destroy = wh_destroy,
};
