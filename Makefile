# iodirty — top-level build. Plain GNU make + pkg-config. `make help` lists the targets.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
DBUSDATADIR ?= $(DATADIR)/dbus-1
# dbus-daemon reads bus policies from /usr/share/dbus-1/system.d and /etc/dbus-1/system.d
# only, so a /usr/local install puts the policy under /etc.
DBUSPOLICYDIR ?= $(if $(filter /usr,$(PREFIX)),$(DBUSDATADIR)/system.d,$(SYSCONFDIR)/dbus-1/system.d)
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
DESTDIR ?=

B ?= build
CC ?= cc
PKG_CONFIG ?= pkg-config
SANITIZE ?=
IOD_CACHE ?= $(HOME)/.cache/iodirty
export IOD_CACHE

WARNINGS := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wformat-security \
	-Wstrict-prototypes -Wno-unused-parameter
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=gnu11 $(WARNINGS) $(CFLAGS) -D_GNU_SOURCE -I$(B)/uapi -Ilib -MMD -MP
ALL_LDFLAGS := $(LDFLAGS)
ifneq ($(SANITIZE),)
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
ALL_LDFLAGS += -fsanitize=$(SANITIZE)
endif

pc = $(shell $(PKG_CONFIG) $(1) $(2) 2>/dev/null)
JSON_CFLAGS := $(call pc,--cflags,json-c)
JSON_LIBS := $(call pc,--libs,json-c)
SYSTEMD_CFLAGS := $(call pc,--cflags,libsystemd)
SYSTEMD_LIBS := $(call pc,--libs,libsystemd)
NL_CFLAGS := $(call pc,--cflags,libnl-3.0)
NL_LIBS := $(call pc,--libs,libnl-3.0)
CHECK_CFLAGS := $(call pc,--cflags,check)
CHECK_LIBS := $(call pc,--libs,check)

# --- uapi headers ------------------------------------------------------------------------
UAPI_STAMP := $(B)/uapi/.stamp
$(UAPI_STAMP): lib/uapi/gen-headers.sh lib/uapi/kernel-source.sh
	+@CC="$(CC)" sh lib/uapi/gen-headers.sh $(B)/uapi

# --- libiodirty --------------------------------------------------------------------------
LIB_SRCS := $(wildcard lib/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
LIB_HDRS := $(wildcard lib/iod*.h)
LIBIODIRTY := $(B)/libiodirty.a

# Position independent: the client's shared library carries some of these objects.
$(B)/lib/%.o: lib/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC $(JSON_CFLAGS) -c $< -o $@

$(LIBIODIRTY): $(LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

# Remade whenever the install paths differ from the last build ('make; make install PREFIX=/usr').
$(B)/.install-paths: FORCE
	@mkdir -p $(@D)
	@echo '$(PREFIX) $(LIBDIR) $(INCLUDEDIR)' | cmp -s - $@ || echo '$(PREFIX) $(LIBDIR) $(INCLUDEDIR)' >$@

$(B)/libiodirty.pc: lib/libiodirty.pc.in $(B)/.install-paths
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|;s|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|;s|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' $< >$@

# --- iodirtyd: everything but main() in a core library, linked by iodirtyd and the tests ---
DAEMON_CORE_SRCS := $(filter-out daemon/iodirtyd.c,$(wildcard daemon/*.c))
DAEMON_CORE_OBJS := $(DAEMON_CORE_SRCS:%.c=$(B)/%.o)
DAEMON_CORE := $(B)/libiodirtyd.a
DAEMON_LIBS = $(SYSTEMD_LIBS) $(NL_LIBS) $(JSON_LIBS)

$(B)/daemon/%.o: daemon/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) $(JSON_CFLAGS) $(NL_CFLAGS) -Idaemon -c $< -o $@

$(DAEMON_CORE): $(DAEMON_CORE_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

$(B)/iodirtyd: $(B)/daemon/iodirtyd.o $(DAEMON_CORE) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(DAEMON_LIBS)

# --- libiodirty-client: connect, bus names, batch builders, the event channel, the log reader
# Installed as a shared library (SONAME libiodirty-client.so.0, exporting only its API, see
# client/libiodirty-client.sym); the programs and tests of this tree link the same objects
# statically (libiodirty-client.a), so that they run from the build folder and in the guest.
CLIENT_LIB_SRCS := client/bus-client.c client/event-channel.c
CLIENT_LIB_OBJS := $(CLIENT_LIB_SRCS:%.c=$(B)/%.o)
CLIENT_LIB := $(B)/libiodirty-client.a
CLIENT_SO_VERSION := 0.3.0
CLIENT_SO := $(B)/libiodirty-client.so.$(CLIENT_SO_VERSION)
CLIENT_LIBS = $(SYSTEMD_LIBS) $(JSON_LIBS)

$(B)/client/%.o: client/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fPIC $(SYSTEMD_CFLAGS) $(JSON_CFLAGS) -Iclient -c $< -o $@

$(CLIENT_LIB): $(CLIENT_LIB_OBJS)
	@rm -f $@
	$(AR) rcs $@ $^

# The log reader and what it needs of libiodirty go into the shared library too.
CLIENT_SO_LIB_OBJS := $(addprefix $(B)/lib/,dirty-log.o bitmap.o log.o util.o)

$(CLIENT_SO): $(CLIENT_LIB_OBJS) $(CLIENT_SO_LIB_OBJS) client/libiodirty-client.sym
	$(CC) $(ALL_LDFLAGS) -shared -Wl,-soname,libiodirty-client.so.0 \
		-Wl,--version-script=client/libiodirty-client.sym -Wl,--no-undefined \
		$(CLIENT_LIB_OBJS) $(CLIENT_SO_LIB_OBJS) -o $@ $(SYSTEMD_LIBS)
	ln -sf $(notdir $@) $(B)/libiodirty-client.so.0
	ln -sf libiodirty-client.so.0 $(B)/libiodirty-client.so

$(B)/libiodirty-client.pc: client/libiodirty-client.pc.in $(B)/.install-paths
	@mkdir -p $(@D)
	sed -e 's|@PREFIX@|$(PREFIX)|;s|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|;s|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|;s|@VERSION@|$(CLIENT_SO_VERSION)|' $< >$@

# --- the client programs ---------------------------------------------------------------------
CTL_OBJS := $(B)/client/iodirtyctl.o $(B)/client/ctl.o $(B)/client/ctl-rate.o $(B)/client/metrics.o
$(B)/iodirtyctl: $(CTL_OBJS) $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(CLIENT_LIBS)

MIGRATE_OBJS := $(B)/client/iodirty-migrate.o $(B)/client/migrate-dest.o $(B)/client/migrate.o
$(B)/iodirty-migrate: $(MIGRATE_OBJS) $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(CLIENT_LIBS)

BINS := $(B)/iodirtyd $(B)/iodirtyctl $(B)/iodirty-migrate

# --- units: the services name the installed programs' paths; timers are installed as they are
UNITS := $(patsubst units/%.in,$(B)/units/%,$(wildcard units/*.service.in))
TIMERS := $(wildcard units/*.timer)

# Remade whenever SBINDIR or BINDIR differs from the last build ('make; make install PREFIX=/usr').
$(B)/units/.sbindir: FORCE
	@mkdir -p $(@D)
	@echo '$(SBINDIR) $(BINDIR)' | cmp -s - $@ || echo '$(SBINDIR) $(BINDIR)' >$@

$(B)/units/%: units/%.in $(B)/units/.sbindir
	sed -e 's|@SBINDIR@|$(SBINDIR)|g;s|@BINDIR@|$(BINDIR)|g' $< >$@

.PHONY: FORCE
FORCE:

# --- tests -------------------------------------------------------------------------------
UNIT_SRCS := $(wildcard tests/unit/test-*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
BENCH_SRCS := $(wildcard tests/bench/bench-*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(B)/bench/%)

$(B)/tests/%.o: tests/unit/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) $(JSON_CFLAGS) -Itests/unit -c $< -o $@

# Unit tests of iodirtyd's core (tests/unit/test-daemon-*.c) link libiodirtyd.a.
UNIT_DAEMON_BINS := $(filter $(B)/tests/test-daemon-%,$(UNIT_BINS))

$(UNIT_DAEMON_BINS:=.o): $(B)/tests/%.o: tests/unit/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) $(SYSTEMD_CFLAGS) $(JSON_CFLAGS) -Itests/unit -Idaemon -c $< -o $@

$(UNIT_DAEMON_BINS): %: %.o $(DAEMON_CORE) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(CHECK_LIBS) $(DAEMON_LIBS)

$(filter-out $(UNIT_DAEMON_BINS),$(UNIT_BINS)): $(B)/tests/test-%: $(B)/tests/test-%.o $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(CHECK_LIBS) $(JSON_LIBS)

$(B)/bench/%.o: tests/bench/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -O3 -c $< -o $@

$(B)/bench/bench-%: $(B)/bench/bench-%.o $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(JSON_LIBS)

include tests/vm/tests.mk
include tests/bus/bus.mk

# Keep intermediate objects (no 'rm build/...o' at the end of a run, no needless rebuilds).
.SECONDARY:

# --- top-level targets -------------------------------------------------------------------
.DEFAULT_GOAL := all
.PHONY: all lib tests check check-fresh check-unit check-asan check-bus check-vm check-units bench install uninstall deps \
	format format-check clean help demo valgrind bench-vm

all: $(LIBIODIRTY) $(B)/libiodirty.pc $(DAEMON_CORE) $(CLIENT_LIB) $(CLIENT_SO) $(B)/libiodirty-client.pc $(BINS) $(UNITS) $(UNIT_BINS) $(BENCH_BINS) $(VM_TEST_BINS) $(BUS_CLIENT) $(BUS_SCALE) ## build everything into $(B)/

lib: $(LIBIODIRTY) ## build libiodirty only

tests: $(UNIT_BINS) $(BENCH_BINS)

check: check-unit check-asan check-units $(if $(wildcard tests/bus/run),check-bus) $(if $(wildcard tests/vm/run),check-vm) ## run every test tier

check-unit: $(UNIT_BINS) ## unit tests (check)
	@sh tests/run-unit.sh $(UNIT_BINS)

check-asan: ## unit and D-Bus tiers again in a sanitizer build (address,undefined) in $(B)-asan/
	@$(MAKE) --no-print-directory B=$(B)-asan SANITIZE=address,undefined check-unit \
		$(if $(wildcard tests/bus/run),check-bus)

valgrind: $(UNIT_BINS) ## unit tests under valgrind (memcheck, leaks are errors)
	@VALGRIND=1 sh tests/run-unit.sh $(UNIT_BINS)

check-bus: all ## D-Bus tier on a private dbus-daemon
	@B=$(B) sh tests/bus/run

check-vm: all ## real-kernel tier in a QEMU guest (builds the guest kernel once)
	@B=$(B) sh tests/vm/run

check-units: $(UNITS) ## systemd-analyze verify of every unit, security scores of the services
	@B=$(B) sh tests/units-check.sh $(UNITS) $(TIMERS)

bench: $(BENCH_BINS) ## benchmarks: ratios against a baseline measured in the same run
	@for b in $(BENCH_BINS); do $$b || exit 1; done
	@$(MAKE) --no-print-directory bench-vm

bench-vm: all ## harvest benchmarks in the mock guest (tests/vm/bench.tests)
	@B=$(B) sh tests/vm/run bench

demo: all ## the main job: the bundled guest, iodirtyd and a reference migration
	@B=$(B) sh tests/vm/run demo

check-fresh: ## the README's test command in a fresh minimal Debian 12 root, as CI runs it (root)
	sh tests/fresh-root.sh 'sh tests/deps.sh && make check'

deps: ## install build and test dependencies on Debian 12 (needs root)
	sh tests/deps.sh

install: all ## install into $(DESTDIR)$(PREFIX) (binaries, library, headers, units, man pages)
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/iodirty
	install -m 0644 $(LIBIODIRTY) $(DESTDIR)$(LIBDIR)/
	install -m 0644 $(B)/libiodirty.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 0644 $(LIB_HDRS) $(DESTDIR)$(INCLUDEDIR)/iodirty/
	install -D -m 0755 $(B)/iodirtyd $(DESTDIR)$(SBINDIR)/iodirtyd
	install -D -m 0755 $(B)/iodirtyctl $(DESTDIR)$(BINDIR)/iodirtyctl
	install -D -m 0755 $(B)/iodirty-migrate $(DESTDIR)$(BINDIR)/iodirty-migrate
	install -m 0755 $(CLIENT_SO) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(CLIENT_SO)) $(DESTDIR)$(LIBDIR)/libiodirty-client.so.0
	ln -sf libiodirty-client.so.0 $(DESTDIR)$(LIBDIR)/libiodirty-client.so
	install -m 0644 $(B)/libiodirty-client.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 0644 client/iodirty-client.h $(DESTDIR)$(INCLUDEDIR)/iodirty/
	$(if $(UNITS)$(TIMERS),install -D -m 0644 -t $(DESTDIR)$(SYSTEMDUNITDIR) $(UNITS) $(TIMERS))
	$(if $(wildcard units/*.conf),install -D -m 0644 -t $(DESTDIR)$(DBUSPOLICYDIR) units/*.conf)
	$(if $(wildcard units/*.sysusers),for f in units/*.sysusers; do install -D -m 0644 $$f $(DESTDIR)$(SYSUSERSDIR)/$$(basename $$f .sysusers).conf; done)
	$(if $(wildcard units/*.dbus-service),for f in units/*.dbus-service; do install -D -m 0644 $$f $(DESTDIR)$(DBUSDATADIR)/system-services/$$(basename $$f .dbus-service).service; done)
	$(if $(wildcard proto/*.xml),install -D -m 0644 -t $(DESTDIR)$(DBUSDATADIR)/interfaces proto/*.xml)
	for m in $(wildcard man/*.[1-8]); do install -D -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/$$(basename $$m); done

FORMAT_SRCS = $(wildcard lib/*.[ch] daemon/*.[ch] client/*.[ch] tests/*/*.[ch])
format: ## reformat the C sources with clang-format
	clang-format -i $(FORMAT_SRCS)

format-check: ## fail if a C source differs from clang-format's output
	@clang-format --dry-run --Werror $(FORMAT_SRCS) && echo "format-check: $(words $(FORMAT_SRCS)) files clean"

clean: ## remove the build folder
	rm -rf $(B)

help: ## list the targets
	@echo "iodirty make targets (variables: B=build dir, PREFIX, DESTDIR, SANITIZE=address,undefined, IOD_CACHE):"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 16

-include $(LIB_OBJS:.o=.d) $(DAEMON_CORE_OBJS:.o=.d) $(B)/daemon/iodirtyd.d $(CLIENT_LIB_OBJS:.o=.d) $(CTL_OBJS:.o=.d) $(MIGRATE_OBJS:.o=.d) $(UNIT_BINS:=.d) $(BENCH_BINS:=.d)
