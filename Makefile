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

$(B)/lib/%.o: lib/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(JSON_CFLAGS) -c $< -o $@

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

# --- daemon and client -------------------------------------------------------------------
DAEMON_SRCS := $(filter-out daemon/iodirtyctl.c daemon/iodirty-migrate.c daemon/migrate.c daemon/bus-client.c,$(wildcard daemon/*.c))
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(B)/%.o)
CTL_SRCS := $(wildcard daemon/iodirtyctl.c)
CTL_OBJS := $(CTL_SRCS:%.c=$(B)/%.o)
# The client side of the bus (iod_bus_client_open()): iodirtyctl, iodirty-migrate, the test clients.
BUS_CLIENT_OBJS := $(B)/daemon/bus-client.o
BINS :=
ifneq ($(DAEMON_SRCS),)
BINS += $(B)/iodirtyd
endif
ifneq ($(CTL_SRCS),)
BINS += $(B)/iodirtyctl
endif
MIGRATE_OBJS := $(B)/daemon/iodirty-migrate.o $(B)/daemon/migrate.o $(BUS_CLIENT_OBJS)
BINS += $(B)/iodirty-migrate

$(B)/daemon/%.o: daemon/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) $(JSON_CFLAGS) $(NL_CFLAGS) -Idaemon -c $< -o $@

$(B)/iodirtyd: $(DAEMON_OBJS) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS) $(NL_LIBS) $(JSON_LIBS)

$(B)/iodirtyctl: $(CTL_OBJS) $(BUS_CLIENT_OBJS) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS) $(JSON_LIBS)

# --- units: the service names the installed daemon's path ------------------------------
UNITS := $(patsubst units/%.in,$(B)/units/%,$(wildcard units/*.service.in))

# Remade whenever SBINDIR differs from the last build ('make; make install PREFIX=/usr').
$(B)/units/.sbindir: FORCE
	@mkdir -p $(@D)
	@echo '$(SBINDIR)' | cmp -s - $@ || echo '$(SBINDIR)' >$@

$(B)/units/%: units/%.in $(B)/units/.sbindir
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' $< >$@

FORCE:

$(B)/iodirty-migrate: $(MIGRATE_OBJS) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS) $(JSON_LIBS)

# --- tests -------------------------------------------------------------------------------
UNIT_SRCS := $(wildcard tests/unit/test-*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/%)
BENCH_SRCS := $(wildcard tests/bench/bench-*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(B)/bench/%)

$(B)/tests/%.o: tests/unit/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) $(JSON_CFLAGS) -Itests/unit -c $< -o $@

$(B)/tests/test-%: $(B)/tests/test-%.o $(LIBIODIRTY)
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

all: $(LIBIODIRTY) $(B)/libiodirty.pc $(BINS) $(UNITS) $(UNIT_BINS) $(BENCH_BINS) $(VM_TEST_BINS) $(BUS_CLIENT) $(BUS_SCALE) ## build everything into $(B)/

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

check-units: $(UNITS) ## systemd-analyze verify and security score of the service unit
	@B=$(B) sh tests/units-check.sh $(UNITS)

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
	$(if $(wildcard $(B)/iodirtyd),install -D -m 0755 $(B)/iodirtyd $(DESTDIR)$(SBINDIR)/iodirtyd)
	$(if $(wildcard $(B)/iodirtyctl),install -D -m 0755 $(B)/iodirtyctl $(DESTDIR)$(BINDIR)/iodirtyctl)
	install -D -m 0755 $(B)/iodirty-migrate $(DESTDIR)$(BINDIR)/iodirty-migrate
	$(if $(UNITS),install -D -m 0644 -t $(DESTDIR)$(SYSTEMDUNITDIR) $(UNITS))
	$(if $(wildcard units/*.conf),install -D -m 0644 -t $(DESTDIR)$(DBUSPOLICYDIR) units/*.conf)
	$(if $(wildcard units/*.sysusers),for f in units/*.sysusers; do install -D -m 0644 $$f $(DESTDIR)$(SYSUSERSDIR)/$$(basename $$f .sysusers).conf; done)
	$(if $(wildcard units/*.dbus-service),for f in units/*.dbus-service; do install -D -m 0644 $$f $(DESTDIR)$(DBUSDATADIR)/system-services/$$(basename $$f .dbus-service).service; done)
	$(if $(wildcard proto/*.xml),install -D -m 0644 -t $(DESTDIR)$(DBUSDATADIR)/interfaces proto/*.xml)
	for m in $(wildcard man/*.[1-8]); do install -D -m 0644 $$m $(DESTDIR)$(MANDIR)/man$${m##*.}/$$(basename $$m); done

FORMAT_SRCS = $(wildcard lib/*.[ch] daemon/*.[ch] tests/*/*.[ch])
format: ## reformat the C sources with clang-format
	clang-format -i $(FORMAT_SRCS)

format-check: ## fail if a C source differs from clang-format's output
	@clang-format --dry-run --Werror $(FORMAT_SRCS) && echo "format-check: $(words $(FORMAT_SRCS)) files clean"

clean: ## remove the build folder
	rm -rf $(B)

help: ## list the targets
	@echo "iodirty make targets (variables: B=build dir, PREFIX, DESTDIR, SANITIZE=address,undefined, IOD_CACHE):"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 16

-include $(LIB_OBJS:.o=.d) $(DAEMON_OBJS:.o=.d) $(CTL_OBJS:.o=.d) $(MIGRATE_OBJS:.o=.d) $(UNIT_BINS:=.d) $(BENCH_BINS:=.d)
