/*-------------------------------------------------------------------------
 *
 * kafka_mock_broker.c
 *		A Kafka broker for the tests: librdkafka's mock cluster (it speaks
 *		the Kafka protocol, with idempotent and transactional producers,
 *		consumer groups and read_committed), in a process of its own.
 *
 * Usage: kafka_mock_broker [-b brokers] [-p partitions] [-t topic]...
 *
 * Listens on 127.0.0.1 (ephemeral ports), creates the topics given with
 * -t (each with -p partitions; other topics are created when first
 * used), prints the bootstrap address ("127.0.0.1:port,...") on one line
 * of standard output and runs until SIGTERM or SIGINT.  SIGUSR1 takes
 * every broker down (connections are closed and refused: a broker stopped
 * mid-stream), SIGUSR2 brings them up again; SIGHUP makes the next
 * InitProducerId request fail with CLUSTER_AUTHORIZATION_FAILED, which is
 * fatal to the idempotent producer that sent it.  Each of these is
 * reported on standard error.  Its data lives in memory only.
 *
 *-------------------------------------------------------------------------
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t want_down = 0;
static volatile sig_atomic_t want_fatal = 0;

/* The Kafka protocol's InitProducerId request (rdkafka_protocol.h, not public) */
#define API_KEY_INIT_PRODUCER_ID	22

static void
on_stop(int sig)
{
	(void) sig;
	stop_requested = 1;
}

static void
on_down(int sig)
{
	(void) sig;
	want_down = 1;
}

static void
on_up(int sig)
{
	(void) sig;
	want_down = 0;
}

static void
on_fatal(int sig)
{
	(void) sig;
	want_fatal = 1;
}

static void
usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [-b brokers] [-p partitions] [-t topic]...\n", argv0);
	exit(2);
}

int
main(int argc, char **argv)
{
	char		errstr[512];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	int			nbrokers = 1;
	int			partitions = 4;
	int			is_down = 0;
	int			opt;
	char	  **topics = calloc(argc, sizeof(char *));
	int			ntopics = 0;
	struct sigaction sa;

	while ((opt = getopt(argc, argv, "b:p:t:")) != -1)
	{
		switch (opt)
		{
			case 'b':
				nbrokers = atoi(optarg);
				break;
			case 'p':
				partitions = atoi(optarg);
				break;
			case 't':
				topics[ntopics++] = optarg;
				break;
			default:
				usage(argv[0]);
		}
	}
	if (nbrokers < 1 || partitions < 1 || optind != argc)
		usage(argv[0]);

	/* the cluster needs a client handle for its book keeping */
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "%s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "rd_kafka_new: %s\n", errstr);
		return 1;
	}
	mc = rd_kafka_mock_cluster_new(rk, nbrokers);
	if (mc == NULL)
	{
		fprintf(stderr, "could not create the mock cluster\n");
		return 1;
	}
	for (int i = 0; i < ntopics; i++)
	{
		rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, topics[i], partitions, 1);

		if (err)
		{
			fprintf(stderr, "topic %s: %s\n", topics[i], rd_kafka_err2str(err));
			return 1;
		}
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_down;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_up;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_fatal;
	sigaction(SIGHUP, &sa, NULL);

	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);

	while (!stop_requested)
	{
		if (want_down != is_down)
		{
			is_down = want_down;
			if (is_down)
				rd_kafka_mock_broker_set_down(mc, -1);
			else
				rd_kafka_mock_broker_set_up(mc, -1);
			fprintf(stderr, "kafka_mock_broker: brokers %s\n", is_down ? "down" : "up");
		}
		if (want_fatal)
		{
			want_fatal = 0;
			rd_kafka_mock_push_request_errors(mc, API_KEY_INIT_PRODUCER_ID, 1,
											  RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED);
			fprintf(stderr, "kafka_mock_broker: the next InitProducerId fails\n");
		}
		usleep(50 * 1000);
	}
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	free(topics);
	return 0;
}
