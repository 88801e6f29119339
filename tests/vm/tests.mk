# Guest-tier test programs: tests/vm/test-kernel-*.c -> $(B)/vm/test-kernel-*.
# Included by the top-level Makefile (after its variables: B, CC, ALL_CFLAGS, ALL_LDFLAGS,
# CHECK_CFLAGS, JSON_LIBS, LIBIODIRTY, UAPI_STAMP, pc). Linked statically, so that the guest
# needs nothing but the binary; VM_STATIC= (empty) links dynamically, and a sanitizer build
# always does.
VM_TEST_SRCS := $(wildcard tests/vm/test-kernel-*.c)
VM_TEST_BINS := $(VM_TEST_SRCS:tests/vm/%.c=$(B)/vm/%)
VM_STATIC ?= 1
VM_LINK_STATIC := $(if $(SANITIZE),,$(VM_STATIC))
VM_LDFLAGS := $(if $(VM_LINK_STATIC),-static)
VM_CHECK_LIBS := $(if $(VM_LINK_STATIC),$(call pc,--static --libs,check),$(CHECK_LIBS))

$(B)/vm/%.o: tests/vm/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -Itests/vm -c $< -o $@

$(B)/vm/test-kernel-%: $(B)/vm/test-kernel-%.o $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $(VM_LDFLAGS) $^ -o $@ $(VM_CHECK_LIBS) $(JSON_LIBS)

.PHONY: vm-tests
vm-tests: $(VM_TEST_BINS) ## guest-tier test programs (run by tests/vm/run)

-include $(VM_TEST_BINS:=.d)
