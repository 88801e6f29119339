/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-signals.h"
#include "bus-util.h"
#include "device.h"
#include "device-dbus.h"
#include "errors.h"
#include "event-channel.h"
#include "persist.h"
#include "logging.h"
#include "manager.h"
#include "manager-dbus.h"
#include "session.h"
#include "session-dbus.h"

struct create_options {
	uint64_t page_size;
	bool huge_pages;
	bool viommu;
	bool nested;
	const char *disconnect_policy;
};

static const struct iod_bus_option create_options_table[] = {
	{"page_size", 't', offsetof(struct create_options, page_size)},
	{"huge_pages", 'b', offsetof(struct create_options, huge_pages)},
	{"viommu", 'b', offsetof(struct create_options, viommu)},
	{"nested", 'b', offsetof(struct create_options, nested)},
	{"disconnect_policy", 's', offsetof(struct create_options, disconnect_policy)},
	{},
};

/* Adopt mode: the IOAS is the client's, so its huge page option is too. */
static const struct iod_bus_option adopt_options_table[] = {
	{"page_size", 't', offsetof(struct create_options, page_size)},
	{"viommu", 'b', offsetof(struct create_options, viommu)},
	{"nested", 'b', offsetof(struct create_options, nested)},
	{"disconnect_policy", 's', offsetof(struct create_options, disconnect_policy)},
	{},
};

static int read_session_options(sd_bus_message *m, struct iod_manager *mgr,
				const struct iod_bus_option *table, struct iod_session_options *ret,
				sd_bus_error *error)
{
	struct create_options o = {
		.page_size = mgr->ctx.config.page_size,
		.huge_pages = mgr->ctx.config.huge_pages,
		.disconnect_policy = iod_disconnect_policy_to_string(
			mgr->ctx.config.disconnect_policy),
	};
	int r, policy;

	r = iod_bus_read_options(m, table, &o, error);
	if (r < 0)
		return r;
	if (!iod_page_size_valid(o.page_size))
		return sd_bus_error_setf(
			error, SD_BUS_ERROR_INVALID_ARGS,
			"Option \"page_size\" must be a power of two from 4096 to 1073741824");
	if (o.nested && o.viommu)
		return sd_bus_error_setf(
			error, SD_BUS_ERROR_INVALID_ARGS,
			"Options \"nested\" and \"viommu\" exclude each other: a nested session harvests the nest parent by GPA and needs no Map/Unmap events");
	policy = iod_disconnect_policy_from_string(o.disconnect_policy);
	if (policy < 0) {
		char q[IOD_QUOTE_MAX];

		return sd_bus_error_setf(
			error, SD_BUS_ERROR_INVALID_ARGS,
			"Option \"disconnect_policy\" must be \"destroy\" or \"keep\", not \"%s\"",
			iod_quote(o.disconnect_policy, q));
	}
	*ret = (struct iod_session_options){
		.page_size = o.page_size,
		.huge_pages = o.huge_pages,
		.viommu = o.viommu,
		.nested = o.nested,
		.disconnect_policy = policy,
	};
	return 0;
}

static int check_name(const char *name, sd_bus_error *error)
{
	char q[IOD_QUOTE_MAX];

	if (!iod_session_name_valid(name))
		return sd_bus_error_setf(
			error, SD_BUS_ERROR_INVALID_ARGS,
			"Session name \"%s\" is not 1 to %d characters of A-Z, a-z, 0-9, _ and -",
			iod_quote(name, q), IOD_NAME_MAX);
	return 0;
}

/* May uid have one more session? */
static int check_session_limits(struct iod_manager *m, const char *name, uid_t uid,
				sd_bus_error *error)
{
	struct iod_reason why = {};
	int r;

	if (iod_manager_find_session(m, name))
		return sd_bus_error_setf(error, IOD_ERROR_SESSION_EXISTS,
					 "Session %s already exists", name);
	r = iod_limits_check_sessions(&m->ctx.config.limits, m->ctx.n_sessions, uid,
				      iod_manager_sessions_of(m, uid), &why);
	if (r < 0)
		return iod_bus_error_from_reason(error, r, &why);
	return 0;
}

static int session_create_error(sd_bus_error *error, int r, const char *name)
{
	return sd_bus_error_set_errnof(error, r, "Failed to create session %s: %s", name,
				       strerror(-r));
}

/* A new session for the caller, if its uid may have one more; not published yet. */
static int new_session(sd_bus_message *m, struct iod_manager *mgr, const char *name,
		       enum iod_session_mode mode, const struct iod_session_options *o,
		       struct iod_session **ret, sd_bus_error *error)
{
	uid_t uid;
	int r;

	r = iod_bus_query_uid(m, &uid, error);
	if (r < 0)
		return r;
	r = check_session_limits(mgr, name, uid, error);
	if (r < 0)
		return r;

	r = iod_session_new(&mgr->ctx, name, mode, uid, o, ret);
	if (r < 0)
		return session_create_error(error, r, name);
	return 0;
}

static int publish_session(sd_bus_message *m, struct iod_manager *mgr, struct iod_session *s,
			   sd_bus_error *error)
{
	int r;

	r = iod_session_set_owner(s, sd_bus_message_get_sender(m));
	if (r >= 0)
		r = iod_context_add_session(&mgr->ctx, s);
	if (r < 0)
		return session_create_error(error, r, s->name);
	log_info("Session %s created (%s mode) for uid %u, owner %s.", s->name,
		 iod_session_mode_to_string(s->mode), (unsigned)s->uid, s->owner);
	(void)iod_persist_save(mgr);
	(void)iod_bus_emit_session_new(&mgr->ctx, s->name, s->path);
	return 0;
}

static int method_create_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	_cleanup_(iod_session_freep) struct iod_session *s = NULL;
	struct iod_manager *mgr = userdata;
	struct iod_session_options o;
	const char *name;
	int r;

	r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	r = read_session_options(m, mgr, create_options_table, &o, error);
	if (r < 0)
		return r;
	r = check_name(name, error);
	if (r < 0)
		return r;

	if (o.nested)
		return sd_bus_error_setf(
			error, IOD_ERROR_WRONG_MODE,
			"Option \"nested\" needs AdoptSession: the nested HWPTs carry the guest's stage 1, which only the VMM can describe and update, so the VMM allocates the nest parent (IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING) and its children on its own iommufd and lends them out");
	r = new_session(m, mgr, name, IOD_MODE_OWNER, &o, &s, error);
	if (r < 0)
		return r;
	r = publish_session(m, mgr, s, error);
	if (r < 0)
		return r;

	return sd_bus_reply_method_return(m, "o", TAKE_PTR(s)->path);
}

static int method_adopt_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	_cleanup_(iod_session_freep) struct iod_session *s = NULL;
	struct iod_manager *mgr = userdata;
	struct iod_session_options o;
	struct iod_reason why = {};
	const uint32_t *hwpts;
	uint32_t ioas_id;
	const char *name;
	size_t size, n;
	int fd, r;

	r = sd_bus_message_read(m, "shu", &name, &fd, &ioas_id);
	if (r < 0)
		return r;
	r = sd_bus_message_read_array(m, 'u', (const void **)&hwpts, &size);
	if (r < 0)
		return r;
	n = size / sizeof(uint32_t);
	r = read_session_options(m, mgr, adopt_options_table, &o, error);
	if (r < 0)
		return r;
	r = check_name(name, error);
	if (r < 0)
		return r;
	if (ioas_id == 0)
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "ioas_id 0 is not an iommufd object id");
	r = iod_limits_check_hwpts(&mgr->ctx.config.limits, n, &why);
	if (r < 0)
		return iod_bus_error_from_reason(error, r, &why);
	for (size_t i = 0; i < n; i++) {
		if (hwpts[i] == 0 || hwpts[i] == ioas_id)
			return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
						 "hwpt id %u is not a HWPT id", hwpts[i]);
		for (size_t k = 0; k < i; k++)
			if (hwpts[k] == hwpts[i])
				return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
							 "hwpt id %u is given twice", hwpts[i]);
	}

	r = new_session(m, mgr, name, IOD_MODE_ADOPT, &o, &s, error);
	if (r < 0)
		return r;
	r = iod_session_adopt(s, fd, ioas_id, hwpts, n, &why);
	if (r < 0)
		return iod_bus_error_from_reason(error, r, &why);
	r = publish_session(m, mgr, s, error);
	if (r < 0)
		return r;

	return sd_bus_reply_method_return(m, "o", TAKE_PTR(s)->path);
}

/* Destroy s, make that durable, and announce it: SessionRemoved goes out once its kernel
 * objects are gone and the state no longer has it. */
static void destroy_session(struct iod_manager *m, struct iod_session *s)
{
	_cleanup_free_ char *name = strdup(s->name), *path = strdup(s->path);

	iod_manager_destroy_session(m, s);
	(void)iod_persist_save(m);
	if (name && path)
		(void)iod_bus_emit_session_removed(&m->ctx, name, path);
}

/* Read a session name argument and find the session (InvalidArgs, NoSuchSession). */
static int read_session(sd_bus_message *m, struct iod_manager *mgr, struct iod_session **ret,
			sd_bus_error *error)
{
	struct iod_session *s;
	const char *name;
	int r;

	r = sd_bus_message_read(m, "s", &name);
	if (r < 0)
		return r;
	r = check_name(name, error);
	if (r < 0)
		return r;

	s = iod_manager_find_session(mgr, name);
	if (!s)
		return sd_bus_error_setf(error, IOD_ERROR_NO_SUCH_SESSION, "No session %s", name);
	*ret = s;
	return 0;
}

static int method_get_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_session *s;
	int r;

	r = read_session(m, userdata, &s, error);
	if (r < 0)
		return r;
	return sd_bus_reply_method_return(m, "o", s->path);
}

static int method_list_sessions(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	struct iod_manager *mgr = userdata;
	int r;

	r = sd_bus_message_new_method_return(m, &reply);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'a', "(sosu)");
	if (r < 0)
		return r;
	for (size_t i = 0; i < mgr->ctx.n_sessions; i++) {
		struct iod_session *s = mgr->ctx.sessions[i];

		r = sd_bus_message_append(reply, "(sosu)", s->name, s->path,
					  iod_session_state_string(s), (uint32_t)s->uid);
		if (r < 0)
			return r;
	}
	r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_send(NULL, reply, NULL);
}

static int method_destroy_session(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_manager *mgr = userdata;
	struct iod_session *s;
	const char *sender = sd_bus_message_get_sender(m);
	uid_t uid;
	int r;

	r = read_session(m, mgr, &s, error);
	if (r < 0)
		return r;

	r = iod_bus_query_uid(m, &uid, error);
	if (r < 0)
		return r;
	/* The owner, or its uid once it is orphaned, or root. */
	if (uid != 0 && (uid != s->uid || (s->owner && (!sender || strcmp(sender, s->owner) != 0))))
		return sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
					 "Session %s belongs to uid %u (%s)", s->name,
					 (unsigned)s->uid, s->owner ? s->owner : "no bus name");

	destroy_session(mgr, s);
	return sd_bus_reply_method_return(m, NULL);
}

static int append_probe(sd_bus_message *reply, const struct iod_device *d, bool nest_parent_dirty)
{
	const char *name;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "{sv}");
	if (r < 0)
		return r;
	r = sd_bus_message_append(
		reply, "{sv}{sv}{sv}{sv}{sv}{sv}", "cdev", "s", d->cdev ? d->cdev : "",
		"iommu_type", "s", iod_iommu_type_to_string(d->hw.type), "iommu_dirty_tracking",
		"b", (int)d->hw.dirty_tracking, "nest_parent_dirty_tracking", "b",
		(int)nest_parent_dirty, "dma_logging", "b", (int)d->features.dma_logging,
		"migration", "b", (int)d->features.migration);
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(reply, 'e', "sv");
	if (r >= 0)
		r = sd_bus_message_append(reply, "s", "migration_flags");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'v', "as");
	if (r >= 0)
		r = sd_bus_message_open_container(reply, 'a', "s");
	for (unsigned i = 0;
	     r >= 0 && (name = iod_migration_flag_name(d->features.migration_flags, i)); i++)
		r = sd_bus_message_append(reply, "s", name);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r >= 0)
		r = sd_bus_message_close_container(reply);
	if (r < 0)
		return r;
	return sd_bus_message_close_container(reply);
}

/*
 * Nested mode needs a nest parent that tracks dirty pages (SMMUv3 cannot in Linux 6.12):
 * try to allocate one for the bound device on a scratch IOAS of the probe's own iommufd,
 * which goes with it.
 */
static int probe_nest_parent(struct iod_iommufd *ictx, const struct iod_device *d, bool *ret)
{
	uint32_t ioas;
	int r;

	if (!d->hw.dirty_tracking) {
		*ret = false;
		return 0;
	}
	r = iod_ioas_alloc(ictx, &ioas);
	if (r < 0)
		return r;
	r = iod_hwpt_probe_nest_parent(ictx, d->dev_id, ioas, ret);
	(void)iod_iommufd_destroy(ictx, ioas);
	return r;
}

static int probe_common(sd_bus_message *m, struct iod_manager *mgr, const char *spec, int fd,
			sd_bus_error *error)
{
	_cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
	_cleanup_(iod_device_freep) struct iod_device *d = NULL;
	struct iod_iommufd *ictx = NULL;
	struct iod_reason why = {};
	bool nest_parent_dirty = false;
	char q[IOD_QUOTE_MAX];
	uid_t uid;
	int r;

	r = iod_bus_query_uid(m, &uid, error);
	if (r < 0)
		return r;
	if (spec && uid != 0)
		return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
					IOD_DEVICE_NEEDS_ROOT " to ProbeDeviceFd");
	if (spec && !iod_device_spec_valid(spec))
		return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
					 "Device \"%s\" is " IOD_DEVICE_SPEC_WANTED,
					 iod_quote(spec, q));

	/* A file of the daemon's own: a cdev bind belongs to the open file and cannot be undone,
	 * so the caller's fd is never bound (it stays free for the caller's own iommufd). */
	r = iod_device_open_probe(mgr->ctx.config.sysfs_root, spec, fd, &d, &why);
	if (r < 0)
		return iod_bus_error_from_reason(error, r, &why);

	r = iod_iommufd_open(mgr->ctx.config.iommufd_path, &ictx);
	if (r == -ENODEV || r == -ENOENT)
		return sd_bus_error_setf(
			error, IOD_ERROR_NO_IOMMUFD,
			"%s does not exist: this kernel has no iommufd (CONFIG_IOMMUFD)",
			mgr->ctx.config.iommufd_path ? mgr->ctx.config.iommufd_path : "/dev/iommu");
	if (r < 0)
		return iod_bus_error_kernel(error, r, "Failed to open /dev/iommu");
	r = iod_device_bind(d, ictx, &why);
	if (r == -EINVAL || r == -EBUSY)
		r = iod_reasonf(&why, -EBUSY, IOD_ERROR_BUSY,
				"%s is in use: it is bound to an iommufd (a VMM holds it), and a "
				"probe must not disturb it",
				d->cdev ? d->cdev : d->name);
	if (r >= 0) {
		r = probe_nest_parent(ictx, d, &nest_parent_dirty);
		if (r < 0) {
			log_warning_errno(r,
					  "Failed to find out whether %s can have a dirty tracking "
					  "nest parent, reporting that it cannot: %m",
					  d->name);
			nest_parent_dirty = false;
		}
		r = sd_bus_message_new_method_return(m, &reply);
	}
	if (r >= 0)
		r = append_probe(reply, d, nest_parent_dirty);
	/* Unbind (close the device) before the context goes. */
	d = iod_device_free(d);
	iod_iommufd_free(ictx);
	if (r < 0)
		return iod_bus_error_from_reason(error, r, &why);
	return sd_bus_send(NULL, reply, NULL);
}

static int method_probe_device(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	const char *spec;
	int r;

	r = sd_bus_message_read(m, "s", &spec);
	if (r < 0)
		return r;
	return probe_common(m, userdata, spec, -EBADF, error);
}

static int method_probe_device_fd(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	int fd, r;

	r = sd_bus_message_read(m, "h", &fd);
	if (r < 0)
		return r;
	return probe_common(m, userdata, NULL, fd, error);
}

static int method_dump_state(sd_bus_message *m, void *userdata, sd_bus_error *error)
{
	struct iod_manager *mgr = userdata;
	_cleanup_free_ char *json = NULL, *reason = NULL;
	struct iod_state *st = NULL;
	uid_t uid;
	int r;

	r = iod_bus_query_uid(m, &uid, error);
	if (r < 0)
		return r;
	if (uid != 0)
		return sd_bus_error_set(error, SD_BUS_ERROR_ACCESS_DENIED,
					"Only root may read the daemon's state");

	r = iod_manager_to_state(mgr, &st);
	if (r < 0)
		return sd_bus_error_set_errnof(error, r, "Failed to collect the state: %s",
					       strerror(-r));
	r = iod_state_validate(st, &reason);
	if (r >= 0)
		r = iod_state_to_json(st, &json);
	iod_state_free(st);
	if (reason)
		return sd_bus_error_setf(error, SD_BUS_ERROR_FAILED,
					 "The daemon's state is inconsistent: %s", reason);
	if (r < 0)
		return sd_bus_error_set_errnof(error, r, "Failed to serialise the state: %s",
					       iod_strerror(r));
	return sd_bus_reply_method_return(m, "s", json);
}

static IOD_BUS_DEFINE_PROPERTY_GET_GLOBAL(property_get_version, "s", IOD_VERSION);
static IOD_BUS_DEFINE_PROPERTY_GET(property_get_iommufd_available, "b", struct iod_manager,
				   iod_manager_iommufd_available);
static IOD_BUS_DEFINE_PROPERTY_GET(property_get_dirty_tracking_supported, "b", struct iod_manager,
				   iod_manager_dirty_tracking_supported);
static IOD_BUS_DEFINE_PROPERTY_GET_ENUM(property_get_holes, iod_hole_behavior,
					enum iod_hole_behavior);
static IOD_BUS_DEFINE_PROPERTY_GET_ENUM(property_get_policy, iod_disconnect_policy,
					enum iod_disconnect_policy);

static int property_get_sessions(sd_bus *bus, const char *path, const char *interface,
				 const char *property, sd_bus_message *reply, void *userdata,
				 sd_bus_error *error)
{
	struct iod_manager *m = userdata;
	int r;

	r = sd_bus_message_open_container(reply, 'a', "o");
	if (r < 0)
		return r;
	for (size_t i = 0; i < m->ctx.n_sessions; i++) {
		r = sd_bus_message_append(reply, "o", m->ctx.sessions[i]->path);
		if (r < 0)
			return r;
	}
	return sd_bus_message_close_container(reply);
}

#define MGR_OFF(f) offsetof(struct iod_manager, f)
#define CONST SD_BUS_VTABLE_PROPERTY_CONST
#define UNPRIV SD_BUS_VTABLE_UNPRIVILEGED

const sd_bus_vtable iod_manager_vtable[] = {
	SD_BUS_VTABLE_START(0),

	SD_BUS_PROPERTY("Version", "s", property_get_version, 0, CONST),
	SD_BUS_PROPERTY("IommufdAvailable", "b", property_get_iommufd_available, 0, 0),
	SD_BUS_PROPERTY("DirtyTrackingSupported", "b", property_get_dirty_tracking_supported, 0, 0),
	SD_BUS_PROPERTY("KernelHoleBehavior", "s", property_get_holes, MGR_OFF(ctx.holes),
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("Sessions", "ao", property_get_sessions, 0,
			SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
	SD_BUS_PROPERTY("DisconnectPolicy", "s", property_get_policy,
			MGR_OFF(ctx.config.disconnect_policy), CONST),
	SD_BUS_PROPERTY("DefaultPageSize", "t", NULL, MGR_OFF(ctx.config.page_size), CONST),
	SD_BUS_PROPERTY("DefaultHugePages", "b", iod_bus_property_get_bool,
			MGR_OFF(ctx.config.huge_pages), CONST),
	SD_BUS_PROPERTY("MaxSessions", "u", NULL, MGR_OFF(ctx.config.limits.sessions), CONST),
	SD_BUS_PROPERTY("MaxSessionsPerUser", "u", NULL,
			MGR_OFF(ctx.config.limits.sessions_per_user), CONST),
	SD_BUS_PROPERTY("MaxDevices", "u", NULL, MGR_OFF(ctx.config.limits.devices), CONST),
	SD_BUS_PROPERTY("MaxRegions", "u", NULL, MGR_OFF(ctx.config.limits.regions), CONST),
	SD_BUS_PROPERTY("MaxMappings", "u", NULL, MGR_OFF(ctx.config.limits.mappings), CONST),
	SD_BUS_PROPERTY("MaxLogBytes", "t", NULL, MGR_OFF(ctx.config.limits.log_bytes), CONST),
	SD_BUS_PROPERTY("MaxLogBytesPerUser", "t", NULL,
			MGR_OFF(ctx.config.limits.log_bytes_per_user), CONST),
	SD_BUS_PROPERTY("MaxRanges", "u", NULL, MGR_OFF(ctx.config.limits.ranges), CONST),
	SD_BUS_PROPERTY("Restarts", "t", NULL, MGR_OFF(restarts), CONST),

	SD_BUS_METHOD_WITH_ARGS("CreateSession", SD_BUS_ARGS("s", name, "a{sv}", options),
				SD_BUS_RESULT("o", path), method_create_session, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("AdoptSession",
				SD_BUS_ARGS("s", name, "h", iommufd, "u", ioas_id, "au", hwpt_ids,
					    "a{sv}", options),
				SD_BUS_RESULT("o", path), method_adopt_session, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("GetSession", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", path),
				method_get_session, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("ListSessions", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(sosu)", sessions),
				method_list_sessions, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("DestroySession", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
				method_destroy_session, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("ProbeDevice", SD_BUS_ARGS("s", device),
				SD_BUS_RESULT("a{sv}", info), method_probe_device, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("ProbeDeviceFd", SD_BUS_ARGS("h", fd), SD_BUS_RESULT("a{sv}", info),
				method_probe_device_fd, UNPRIV),
	SD_BUS_METHOD_WITH_ARGS("DumpState", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", json),
				method_dump_state, UNPRIV),

	SD_BUS_SIGNAL_WITH_ARGS("SessionNew", SD_BUS_ARGS("s", name, "o", path), 0),
	SD_BUS_SIGNAL_WITH_ARGS("SessionRemoved", SD_BUS_ARGS("s", name, "o", path), 0),

	SD_BUS_VTABLE_END,
};

/* The match for every owner of every session: a unique name that leaves the bus. */
int iod_manager_on_name_owner_changed(sd_bus_message *message, void *userdata, sd_bus_error *error)
{
	struct iod_manager *m = userdata;
	const char *name, *old_owner, *new_owner;

	if (sd_bus_message_read(message, "sss", &name, &old_owner, &new_owner) < 0)
		return 0;
	if (name[0] != ':' || *new_owner)
		return 0;
	/* One snapshot for all of the owner's sessions. */
	iod_persist_hold(m);
	/* Destroying a session changes the list: look again from the start each time. */
	for (size_t i = 0; i < m->ctx.n_sessions;) {
		struct iod_session *s = m->ctx.sessions[i];

		if (s->owner && strcmp(s->owner, name) == 0) {
			if (iod_session_owner_left(s)) {
				destroy_session(m, s);
			} else {
				/* Kept, orphaned: its channel was the owner's. */
				iod_event_channel_close(s);
				(void)iod_persist_save(m);
				(void)iod_bus_emit_session_changed(s->ctx, s->path, "Owner",
								   "State", NULL);
			}
			i = 0;
			continue;
		}
		i++;
	}
	iod_persist_release(m);
	return 0;
}

int iod_manager_publish(struct iod_manager *m)
{
	int r;

	r = sd_bus_add_object_vtable(m->ctx.bus, NULL, IOD_MANAGER_PATH, IOD_MANAGER_INTERFACE,
				     iod_manager_vtable, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the manager object: %m");
	r = sd_bus_add_fallback_vtable(m->ctx.bus, NULL, IOD_SESSION_PREFIX, IOD_SESSION_INTERFACE,
				       iod_session_vtable, iod_session_object_find, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the session objects: %m");
	r = sd_bus_add_fallback_vtable(m->ctx.bus, NULL, IOD_SESSION_PREFIX, IOD_DEVICE_INTERFACE,
				       iod_device_vtable, iod_device_object_find, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the device objects: %m");
	r = sd_bus_add_node_enumerator(m->ctx.bus, NULL, IOD_SESSION_PREFIX,
				       iod_session_node_enumerator, m);
	if (r < 0)
		return log_error_errno(r, "Failed to add the node enumerator: %m");

	/* Owners are watched by this one match, installed before any session exists (and
	 * before the restore asks which owners are still there). */
	r = sd_bus_match_signal(m->ctx.bus, NULL, "org.freedesktop.DBus", "/org/freedesktop/DBus",
				"org.freedesktop.DBus", "NameOwnerChanged",
				iod_manager_on_name_owner_changed, m);
	if (r < 0)
		return log_error_errno(r, "Failed to watch the owners of sessions: %m");

	return 0;
}
