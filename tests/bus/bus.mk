# Bus tier (tests/bus): the sd-bus test clients, linked with the client library.
# Included by the top-level Makefile.
BUS_CLIENT := $(B)/tests/bus/test-bus-client
BUS_SCALE := $(B)/tests/bus/test-bus-scale
# The metrics writer on values the daemon never produces (linked with client/metrics.o).
BUS_METRICS_ESCAPE := $(B)/tests/bus/test-metrics-escape

$(BUS_CLIENT:=.o) $(BUS_SCALE:=.o) $(BUS_METRICS_ESCAPE:=.o): $(B)/tests/bus/%.o: tests/bus/%.c $(UAPI_STAMP)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(SYSTEMD_CFLAGS) -Iclient -Itests/vm -c $< -o $@

$(BUS_CLIENT) $(BUS_SCALE): %: %.o $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS)

$(BUS_METRICS_ESCAPE): %: %.o $(B)/client/metrics.o $(CLIENT_LIB) $(LIBIODIRTY)
	$(CC) $(ALL_LDFLAGS) $^ -o $@ $(SYSTEMD_LIBS)

tests: $(BUS_CLIENT) $(BUS_SCALE) $(BUS_METRICS_ESCAPE)
check-bus: $(BUS_CLIENT) $(BUS_SCALE) $(BUS_METRICS_ESCAPE) $(VM_HARNESS)

-include $(BUS_CLIENT:=.d) $(BUS_SCALE:=.d) $(BUS_METRICS_ESCAPE:=.d)
