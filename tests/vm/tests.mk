# Guest-tier test programs: tests/vm/test-kernel-*.c -> $(B)/vm/test-kernel-*.
# tests/vm/test-daemon-*.c and tests/vm/mockvm.c drive iodirtyd over D-Bus (sd-bus): they
# are linked dynamically with libsystemd (tests/vm/run copies the shared libraries).
# Included by the top-level Makefile (after its variables: B, CC, ALL_CFLAGS, ALL_LDFLAGS,
# CHECK_CFLAGS, JSON_LIBS, LIBIODIRTY, CLIENT_LIB, UAPI_STAMP, pc). Linked statically, so that the guest
# needs nothing but the binary; VM_STATIC= (empty) links dynamically, and a sanitizer build
# always does.
VM_TEST_SRCS := $(wildcard tests/vm/test-kernel-*.c)
VM_TEST_BINS := $(VM_TEST_SRCS:tests/vm/%.c=$(B)/vm/%)
VM_DAEMON_SRCS := $(wildcard tests/vm/test-daemon-*.c tests/vm/mockvm.c)
VM_DAEMON_BINS := $(VM_DAEMON_SRCS:tests/vm/%.c=$(B)/vm/%)
VM_TEST_BINS += $(VM_DAEMON_BINS)
VM_STATIC ?= 1
VM_LINK_STATIC := $(if $(SANITIZE),,$(VM_STATIC))
VM_LDFLAGS := $(if $(VM_LINK_STATIC),-static)
VM_CHECK_LIBS := $(if $(VM_LINK_STATIC),$(call pc,--static --libs,check),$(CHECK_LIBS))

$(B)/vm/%.o: tests/vm/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -Itests/vm -c $< -o $@

$(B)/vm/test-kernel-%: $(B)/vm/test-kernel-%.o $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $(VM_LDFLAGS) $^ -o $@ $(VM_CHECK_LIBS) $(JSON_LIBS)

$(VM_DAEMON_BINS:=.o): $(B)/vm/%.o: tests/vm/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) -Itests/vm -Iclient -c $< -o $@

$(VM_DAEMON_BINS): %: %.o $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS) $(JSON_LIBS)

# The fd store harness: plays the service manager's part of the notify protocol for the
# restart tests (tests/vm/fdstore-harness.c). libc only, static.
VM_HARNESS := $(B)/vm/fdstore-harness
VM_TEST_BINS += $(VM_HARNESS)

$(VM_HARNESS): $(B)/vm/fdstore-harness.o
	$(CC) $(ALL_LDFLAGS) $(VM_LDFLAGS) $^ -o $@

# The guest's module loader (finit_module; tests/vm/iod-insmod.c). libc only, static.
VM_INSMOD := $(B)/vm/iod-insmod
VM_TEST_BINS += $(VM_INSMOD)

$(VM_INSMOD): $(B)/vm/iod-insmod.o
	$(CC) $(ALL_LDFLAGS) $(VM_LDFLAGS) $^ -o $@

.PHONY: vm-tests
vm-tests: $(VM_TEST_BINS) ## guest-tier test programs (run by tests/vm/run)

-include $(VM_TEST_BINS:=.d)

# The migration proofs and the harvest benchmarks: sd-bus clients, linked dynamically (there
# is no static libsystemd); tests/vm/run copies their shared libraries into the guest.
VM_BUS_BINS := $(B)/vm/test-migrate $(B)/vm/bench-harvest
VM_TEST_BINS += $(VM_BUS_BINS)

$(B)/vm/test-migrate.o $(B)/vm/bench-harvest.o: $(B)/vm/%.o: tests/vm/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) -Itests/vm -Iclient -c $< -o $@

$(B)/vm/test-migrate: $(B)/vm/test-migrate.o $(B)/client/migrate.o $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS) $(JSON_LIBS)

$(B)/vm/bench-harvest: $(B)/vm/bench-harvest.o $(B)/client/migrate.o $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS) $(JSON_LIBS)
