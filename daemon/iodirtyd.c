/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * iodirtyd: serves org.iodirty.Tracker1, IOMMU dirty tracking for live migration.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "errors.h"
#include "harvest-worker.h"
#include "logging.h"
#include "manager.h"
#include "manager-dbus.h"
#include "persist.h"
#include "uevent.h"

static const char *arg_config;
static const char *arg_bus_address;
static bool arg_user;

static void help(void)
{
	printf("Usage: iodirtyd [OPTIONS...]\n"
	       "\n"
	       "IOMMU dirty tracking service for live migration (org.iodirty.Tracker1).\n"
	       "\n"
	       "  -h --help                   Show this help and exit\n"
	       "     --version                Show the version and exit\n"
	       "  -c --config=PATH            Configuration file (default " IOD_CONFIG_FILE ")\n"
	       "     --bus-address=ADDRESS    Serve on the bus at ADDRESS instead of the system bus\n"
	       "     --user                   Serve on the user bus instead of the system bus\n"
	       "     --log-level=LEVEL        err, warning, notice, info or debug\n"
	       "     --disconnect-policy=P    What happens to a session whose owner leaves the bus:\n"
	       "                              destroy or keep\n"
	       "     --limit=NAME=N           Override a limit of the configuration file (sessions,\n"
	       "                              sessions_per_user, devices, regions, mappings,\n"
	       "                              log_bytes, log_bytes_per_user, ranges)\n"
	       "     --iommufd-path=PATH      Use PATH instead of /dev/iommu\n"
	       "\n"
	       "See iodirtyd(8) and iodirtyd.conf(5).\n");
}

enum {
	ARG_VERSION = 0x100,
	ARG_BUS_ADDRESS,
	ARG_USER,
	ARG_LOG_LEVEL,
	ARG_DISCONNECT_POLICY,
	ARG_LIMIT,
	ARG_IOMMUFD_PATH,
};

static const struct option options[] = {
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, ARG_VERSION},
	{"config", required_argument, NULL, 'c'},
	{"bus-address", required_argument, NULL, ARG_BUS_ADDRESS},
	{"user", no_argument, NULL, ARG_USER},
	{"log-level", required_argument, NULL, ARG_LOG_LEVEL},
	{"disconnect-policy", required_argument, NULL, ARG_DISCONNECT_POLICY},
	{"limit", required_argument, NULL, ARG_LIMIT},
	{"iommufd-path", required_argument, NULL, ARG_IOMMUFD_PATH},
	{},
};

/* First pass: what decides where the configuration comes from. Returns 0 to go on, 1 to
 * exit successfully, < 0 on a bad option. */
static int parse_argv_early(int argc, char *argv[])
{
	int c;

	opterr = 1;
	while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return 1;
		case ARG_VERSION:
			printf("iodirtyd %s\n", IOD_VERSION);
			return 1;
		case 'c':
			arg_config = optarg;
			break;
		case ARG_BUS_ADDRESS:
			arg_bus_address = optarg;
			break;
		case ARG_USER:
			arg_user = true;
			break;
		case '?':
			return -EINVAL;
		default:
			break;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "iodirtyd takes no arguments, got \"%s\".\n", argv[optind]);
		return -EINVAL;
	}
	if (arg_user && arg_bus_address) {
		fprintf(stderr, "--user and --bus-address exclude each other.\n");
		return -EINVAL;
	}
	return 0;
}

/* Second pass: command-line overrides of the configuration file. */
static int parse_argv_overrides(int argc, char *argv[], struct iod_config *config)
{
	_cleanup_free_ char *reason = NULL;
	int c, r;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "hc:", options, NULL)) >= 0) {
		switch (c) {
		case ARG_LOG_LEVEL:
			r = iod_log_level_from_string(optarg);
			if (r < 0) {
				fprintf(stderr, "Unknown log level \"%s\".\n", optarg);
				return -EINVAL;
			}
			config->log_level = r;
			break;
		case ARG_DISCONNECT_POLICY:
			r = iod_disconnect_policy_from_string(optarg);
			if (r < 0) {
				fprintf(stderr,
					"--disconnect-policy must be \"destroy\" or \"keep\", not \"%s\".\n",
					optarg);
				return -EINVAL;
			}
			config->disconnect_policy = r;
			break;
		case ARG_LIMIT: {
			_cleanup_free_ char *name = strdup(optarg);
			char *eq = name ? strchr(name, '=') : NULL;

			if (!eq) {
				fprintf(stderr, "--limit expects NAME=N, got \"%s\".\n", optarg);
				return -EINVAL;
			}
			*eq = '\0';
			r = iod_config_set_limit(config, name, eq + 1, &reason);
			if (r < 0) {
				fprintf(stderr, "--limit: %s.\n", reason ? reason : strerror(-r));
				return r;
			}
			break;
		}
		case ARG_IOMMUFD_PATH:
			if (optarg[0] != '/') {
				fprintf(stderr, "--iommufd-path must be an absolute path.\n");
				return -EINVAL;
			}
			free(config->iommufd_path);
			config->iommufd_path = strdup(optarg);
			if (!config->iommufd_path)
				return -ENOMEM;
			break;
		default:
			break;
		}
	}
	return 0;
}

int main(int argc, char *argv[])
{
	_cleanup_(iod_manager_freep) struct iod_manager *m = NULL;
	_cleanup_(iod_uevent_freep) struct iod_uevent *uevent = NULL; /* freed before m */
	_cleanup_free_ char *reason = NULL;
	struct iod_config config;
	int r;

	iod_log_setup();

	r = parse_argv_early(argc, argv);
	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;

	iod_config_init(&config);
	r = iod_config_load(&config, arg_config ? arg_config : IOD_CONFIG_FILE, &reason);
	if (r == -ENOENT && !arg_config) {
		log_debug("No %s, using the defaults.", IOD_CONFIG_FILE);
	} else if (r < 0) {
		if (reason)
			log_error("Bad configuration: %s", reason);
		else
			log_error_errno(r, "Failed to read %s: %m",
					arg_config ? arg_config : IOD_CONFIG_FILE);
		iod_config_clear(&config);
		return EXIT_FAILURE;
	}
	r = parse_argv_overrides(argc, argv, &config);
	if (r < 0) {
		iod_config_clear(&config);
		return EXIT_FAILURE;
	}
	iod_log_set_max_level(config.log_level);

	r = iod_errors_register();
	if (r < 0)
		log_warning_errno(r, "Failed to register the error names, ignoring: %m");

	r = iod_manager_new(&config, &m);
	if (r < 0) {
		iod_config_clear(&config);
		log_error_errno(r, "Failed to set up: %m");
		return EXIT_FAILURE;
	}

	r = iod_persist_new(m);
	if (r < 0) {
		log_error_errno(r, "Failed to set up: %m");
		return EXIT_FAILURE;
	}
	r = iod_manager_connect(m, arg_bus_address, arg_user);
	if (r >= 0) {
		int k = iod_uevent_start(m, &uevent);

		if (k < 0)
			log_warning_errno(
				k,
				"Failed to watch kernel uevents, device removal will go unnoticed: %m");
		r = iod_manager_publish(m);
	}
	if (r >= 0) {
		/* The sessions of the previous instance, before anyone can call. */
		r = iod_persist_restore(m);
		if (r < 0)
			log_warning_errno(r, "Failed to restore from the fd store, ignoring: %m");
		iod_uevent_watch_devices(m);
		r = iod_manager_request_name(m);
	}
	if (r < 0) {
		iod_persist_shutdown(m);
		iod_persist_free(m);
		return EXIT_FAILURE;
	}

	log_info("iodirtyd %s starting (disconnect policy \"%s\", %u sessions at most).",
		 IOD_VERSION, iod_disconnect_policy_to_string(m->ctx.config.disconnect_policy),
		 m->ctx.config.limits.sessions);

	r = iod_manager_run(m);
	/* No harvest thread runs on, and no held call goes unanswered, past this point. */
	iod_harvest_stop_all(m);
	/* With an active fd store, the sessions' kernel objects are left to the next instance. */
	iod_persist_shutdown(m);
	iod_persist_free(m);
	if (r < 0)
		return EXIT_FAILURE;
	return r; /* the exit code given to sd_event_exit() */
}
