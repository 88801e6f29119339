# Bus tier (tests/bus): the sd-bus test client. Included by the top-level Makefile;
# tests/bus/run builds the client itself when it is missing.
BUS_CLIENT := $(B)/tests/bus/test-bus-client

$(BUS_CLIENT): tests/bus/test-bus-client.c daemon/bus-client.c daemon/bus-client.h $(UAPI_STAMP) $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) -Idaemon $(filter %.c,$^) -o $@ $(ALL_LDFLAGS) $(SYSTEMD_LIBS)

tests: $(BUS_CLIENT)
check-bus: $(BUS_CLIENT)

# A thousand sessions and restarts under the fd-store harness (tests/vm/fdstore-harness.c).
BUS_SCALE := $(B)/tests/bus/test-bus-scale

$(BUS_SCALE): tests/bus/test-bus-scale.c daemon/bus-client.c daemon/bus-client.h \
		tests/vm/daemon-test.h tests/vm/fdstore-test.h $(UAPI_STAMP) $(LIB_HDRS)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) -Idaemon -Itests/vm $(filter %.c,$^) -o $@ $(ALL_LDFLAGS) $(SYSTEMD_LIBS)

tests: $(BUS_SCALE)
check-bus: $(BUS_SCALE) $(VM_HARNESS)
