/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A VFIO device of an owner-mode session: its cdev fd, its iommufd binding and what it can
 * do. The session attaches it to one of its HWPTs (session.c).
 */
#ifndef IOD_DEVICE_H
#define IOD_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "errors.h"
#include "iodirty.h"

struct iod_session;

/* Where a device's DMA writes are seen. */
enum iod_dirty_source {
	IOD_SOURCE_IOMMU, /* the dirty bits of its HWPT */
	IOD_SOURCE_DEVICE_LOG, /* the device's own DMA log (VFIO_DEVICE_FEATURE_DMA_LOGGING_*) */
	IOD_SOURCE_FALLBACK, /* nowhere: its mapped ranges count as always dirty */
};

struct iod_device {
	struct iod_session *session;
	uint32_t index; /* object path .../device/<index>, never reused within a session */
	char *name; /* as the client named it: PCI address, cdev path, or "fd" */
	char *cdev; /* the cdev path when known */
	char *path; /* D-Bus object path */
	int fd; /* the cdev, bound to the session's iommufd */
	char *fdname; /* its fd-store name */
	uint32_t dev_id;
	uint32_t hwpt_id; /* the HWPT it is attached to, 0 if none */
	bool bound;
	struct iod_hw_info hw;
	struct iod_vfio_features features;
	/* No IOMMU of its own (an mdev, or another device VFIO reaches guest memory for
	 * through an iommufd access): attached to the IOAS itself, never to a HWPT. */
	bool emulated;
	enum iod_dirty_source source;
	/* The client asked for source by name (dirty_source "iommu" or "device"), not "auto". */
	bool source_explicit;
	/* Device DMA logging, while started: over log_ranges (IOVA, sorted, disjoint: the
	 * mapped ranges merged to what the device takes) at log_page_size. log_max_ranges is
	 * what the device takes, as far as known (IOD_VFIO_LOG_MAX_RANGES until it said E2BIG). */
	bool logging;
	uint64_t log_page_size;
	struct iod_range *log_ranges;
	size_t n_log_ranges;
	size_t log_max_ranges;
	bool lost; /* the device went away (hot-unplug) */
	sd_event_source *req_source; /* VFIO's release request eventfd (uevent.c), owns the fd */
	bool req_unsupported; /* no release request channel: only uevents say it goes */
};

/*
 * Open a device named by spec (a PCI address "DDDD:BB:DD.F" or a cdev path) or, with
 * spec NULL, take over passed_fd (dup'ed). Checks that it is a VFIO device cdev.
 * Errors carry a reason: InvalidArgs for a malformed name or an fd of the wrong type,
 * NoSuchDevice for a device that does not exist or is not bound to vfio-pci.
 */
int iod_device_open(const char *sysfs_root, const char *spec, int passed_fd,
		    struct iod_device **ret, struct iod_reason *why);
/*
 * For a probe: like iod_device_open(), but a passed fd is never used itself: the daemon opens
 * a file of its own for the same cdev (found through sysfs, checked to be the same device),
 * since binding is forever for an open file. The passed fd must be open read-write.
 */
int iod_device_open_probe(const char *sysfs_root, const char *spec, int passed_fd,
			  struct iod_device **ret, struct iod_reason *why);
/* Close the device (the kernel unbinds it from iommufd). Does not detach from the session. */
struct iod_device *iod_device_free(struct iod_device *d);
IOD_DEFINE_FREEP(struct iod_device, iod_device_free)

/* Bind to ictx, then read the IOMMU's capabilities and the device's features. */
int iod_device_bind(struct iod_device *d, struct iod_iommufd *ictx, struct iod_reason *why);

/*
 * true if spec is syntactically a device name AttachDevice and ProbeDevice accept: a PCI
 * address or /dev/vfio/devices/vfioN. Naming a device needs root: the daemon opens it.
 */
bool iod_device_spec_valid(const char *spec);
#define IOD_DEVICE_SPEC_WANTED \
	"neither a PCI address (DDDD:BB:DD.F) nor a VFIO cdev under /dev/vfio/devices (vfioN)"
#define IOD_DEVICE_NEEDS_ROOT                                                               \
	"Only root may name a device, which the daemon then opens; open the cdev yourself " \
	"and pass the fd"

/* "iommu", "device-log", "fallback". */
const char *iod_dirty_source_to_string(enum iod_dirty_source source);

/* "none", "intel-vtd", "arm-smmuv3", ... or "unknown". */
const char *iod_iommu_type_to_string(uint32_t type);
/* Names of VFIO migration flags: "stop-copy", "p2p", "pre-copy"; NULL past the end. */
const char *iod_migration_flag_name(uint64_t flags, unsigned i);

#endif
