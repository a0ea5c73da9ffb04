/*
 * HnapiTest.java — the Java bindings' tests against a running sandbox
 * (`hnsecure sandbox --dir DIR --port 0`):
 *
 *   java -cp out:/usr/share/java/jna.jar -Djna.library.path=LIBDIR \
 *        [-Dhnapi.header=include/hnapi.h] HnapiTest CLIENT_TOML SERVER_TOML
 *   HNAPI_TEST_PANIC=hnapi_send_receive java -cp out:/usr/share/java/jna.jar \
 *        -Djna.library.path=PANIC_LIBDIR HnapiTest --panic-case CLIENT_TOML
 *
 * A plain main (no JUnit): one line per case, exit status 0 when all pass. HL7 is parsed
 * minimally here (segments split on CR, fields on '|'). --panic-case runs one case against
 * a library built with the test-only feature `test-panic` (cargo build --lib --features
 * test-panic), in which the function named by HNAPI_TEST_PANIC panics inside the
 * library's boundary.
 */
import ca.bc.hnsecure.hnapi.Hnapi;
import ca.bc.hnsecure.hnapi.HnapiClient;
import ca.bc.hnsecure.hnapi.HnapiException;
import ca.bc.hnsecure.hnapi.HnapiLibrary;
import ca.bc.hnsecure.hnapi.HnapiServer;
import ca.bc.hnsecure.hnapi.HnetRtrn;
import ca.bc.hnsecure.hnapi.SizeT;
import ca.bc.hnsecure.hnapi.SizeTByReference;
import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Queue;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

public final class HnapiTest {
    private HnapiTest() {}

    interface Case {
        void run() throws Exception;
    }

    private static int passed;
    private static int failed;
    private static int skipped;

    private static Path clientToml;
    private static Path serverToml;
    private static HnapiClient client;

    /** The sandbox's client facility: MSH-4 of everything sent. */
    static final String FACILITY = "BC00000098";
    static final String RUN = Long.toString(System.currentTimeMillis(), 36).toUpperCase();
    static final AtomicLong COUNTER = new AtomicLong();

    public static void main(String[] args) {
        if (args.length == 2 && args[0].equals("--panic-case")) {
            clientToml = Path.of(args[1]).toAbsolutePath();
            System.out.println("# " + Hnapi.version() + " (HNAPI_TEST_PANIC=" + System.getenv("HNAPI_TEST_PANIC") + "), client " + clientToml);
            run("a panic in hnapi_send_receive: HNET_RTRN_INTERNALERROR, and the client still works", HnapiTest::forcedPanic);
            System.out.printf("# %d passed, %d failed%n", passed, failed);
            System.out.flush();
            System.exit(failed == 0 ? 0 : 1);
        }
        if (args.length != 2) {
            System.err.println("usage: java HnapiTest CLIENT_TOML SERVER_TOML");
            System.err.println("       HNAPI_TEST_PANIC=hnapi_send_receive java HnapiTest --panic-case CLIENT_TOML");
            System.exit(2);
        }
        clientToml = Path.of(args[0]).toAbsolutePath();
        serverToml = Path.of(args[1]).toAbsolutePath();
        System.out.println("# " + Hnapi.version() + ", client " + clientToml + ", server " + serverToml);

        run("size_t and size_t* are the platform's size (hnapi.bits: the JVM expected)", HnapiTest::sizeTIsThePlatforms);
        run("version and code names match the library", HnapiTest::versionAndCodeNames);
        run("code table matches include/hnapi.h", HnapiTest::codeTableMatchesHeader);
        run("missing config file: HNET_RTRN_CONFIGERROR with a message", HnapiTest::missingConfig);
        run("bad config text: HNET_RTRN_CONFIGERROR with a message", HnapiTest::badConfigText);
        run("argument checks happen in Java", HnapiTest::javaArgumentChecks);
        run("null for each reference parameter: NullPointerException naming it, before the library", HnapiTest::nullArguments);
        run("raw mapping: NULL parameters are HNET_RTRN_INVALIDPARAMETER, nothing written", HnapiTest::rawNullParameters);
        run("raw mapping: a buffer too small, then big enough (the answer kept)", HnapiTest::rawBufferTooSmallThenEnough);
        run("strings reach the library as UTF-8 whatever the default charset", HnapiTest::utf8Arguments);
        try {
            client = HnapiClient.open(clientToml);
        } catch (RuntimeException e) {
            System.out.println("FAIL cannot open the client: " + e);
            System.exit(1);
        }
        run("sandbox answers a Volume 5 request (R35) with AA", HnapiTest::simpleRequest);
        run("sendReceive(String) is UTF-8 both ways", HnapiTest::stringRoundTrip);
        run("unknown ticket: HNET_RTRN_UNKNOWNTICKET", HnapiTest::unknownTicket);
        run("input without MSH: HNET_RTRN_INVALIDFORMATERROR with a last error", HnapiTest::noMsh);
        run("~200 KiB answer (HNSIM-ECHO) through sendReceive comes back whole", HnapiTest::largeAnswerSendReceive);
        run("~200 KiB answer (HNSIM-ECHO) through a ticket comes back whole", HnapiTest::largeAnswerTicket);
        run("unreachable gateway: AR from HNAPI naming the request", HnapiTest::unreachableGateway);
        run("HNSIM-NORESPONSE with 1000 ms: AR TXFR024E within 2 s", HnapiTest::noResponseTimeout);
        run("16 threads x 100 sendReceive on one client, each answer its own", HnapiTest::concurrentSendReceive);
        run("50 tickets in flight, received in reverse order, each answer its own", HnapiTest::ticketsInReverse);
        run("pending ticket: receive returns null, the ticket stays valid", HnapiTest::pendingTicket);
        run("a null wait lasts until the answer (client) or a request (server) exists", HnapiTest::nullWaitWaits);
        run("open and close 1,000 clients: no thread or open file left behind", HnapiTest::openCloseMany);
        run("server application in Java answers through the gateway", HnapiTest::serverApplication);
        run("log callback receives lines, none with message text", HnapiTest::logCallback);
        run("close wakes a receive waiting on another thread", HnapiTest::closeWakesReceive);
        run("closed client: IllegalStateException, close is idempotent", HnapiTest::closedClient);

        System.out.printf("# %d passed, %d failed, %d skipped%n", passed, failed, skipped);
        System.out.flush();
        System.exit(failed == 0 ? 0 : 1);
    }

    private static void run(String name, Case c) {
        long t0 = System.nanoTime();
        try {
            c.run();
            passed++;
            System.out.printf("ok   %s (%d ms)%n", name, (System.nanoTime() - t0) / 1_000_000);
        } catch (Skip s) {
            skipped++;
            System.out.printf("skip %s: %s%n", name, s.getMessage());
        } catch (Throwable t) {
            failed++;
            System.out.printf("FAIL %s: %s%n", name, t);
            t.printStackTrace(System.out);
        }
        System.out.flush();
    }

    static final class Skip extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Skip(String why) {
            super(why);
        }
    }

    static void expect(boolean condition, String what) {
        if (!condition) {
            throw new AssertionError(what);
        }
    }

    static void expectEq(Object expected, Object actual, String what) {
        if (expected == null ? actual != null : !expected.equals(actual)) {
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    static void expectThrows(Class<? extends Throwable> type, Runnable call, String what) {
        try {
            call.run();
        } catch (Throwable t) {
            expect(type.isInstance(t), what + ": threw " + t + ", not " + type.getSimpleName());
            return;
        }
        throw new AssertionError(what + ": no " + type.getSimpleName());
    }

    static HnapiException expectFailure(HnetRtrn code, Runnable call) {
        try {
            call.run();
        } catch (HnapiException e) {
            expectEq(code, e.code(), "code of " + e.getMessage());
            expect(!e.detail().isEmpty(), "the last error is empty for " + code);
            return e;
        }
        throw new AssertionError("expected HnapiException " + code);
    }

    // ---- minimal HL7 ----

    static String controlId() {
        return "J" + RUN + "-" + COUNTER.incrementAndGet();
    }

    /** A message to {@code app} with MSH-10 {@code control} and the segments given. */
    static byte[] message(String app, String type, String control, String... segments) {
        StringBuilder m = new StringBuilder("MSH|^~\\&|HNAPIJAVA|" + FACILITY + "|" + app + "|BC0003000|20260101120000|TEST|"
                + type + "|" + control + "|D|2.3\r");
        for (String s : segments) {
            m.append(s).append('\r');
        }
        return m.toString().getBytes(StandardCharsets.UTF_8);
    }

    /** Volume 5, 2.5.4: End Payer Relationship, answered AA by the simulator. */
    static byte[] r35(String control) {
        return message("RAIEND-PYR-RL", "R35", control, "ZHD|20010719125635|^00000001|TRAININGAdmin",
                "PID||9029274643^^^BC^PH", "IN1|||||2100030|||||20030531", "ZIH|||||K");
    }

    static String[] segments(byte[] hl7) {
        return new String(hl7, StandardCharsets.UTF_8).split("\r");
    }

    /** SEG-n (MSH-n counts MSH-1 as the field separator), "" when absent. */
    static String field(byte[] hl7, String segment, int n) {
        for (String s : segments(hl7)) {
            if (s.startsWith(segment + "|")) {
                String[] f = s.split("\\|", -1);
                int i = segment.equals("MSH") ? n - 1 : n;
                return i < f.length ? f[i] : "";
            }
        }
        return "";
    }

    static void expectAnswers(byte[] request, byte[] answer, String msa1) {
        expectEq(msa1, field(answer, "MSA", 1), "MSA-1");
        expectEq(field(request, "MSH", 10), field(answer, "MSA", 2), "MSA-2 (the request's MSH-10)");
    }

    // ---- cases ----

    static void sizeTIsThePlatforms() {
        // A size_t passed as a Java long shifts every later argument on a 32-bit JVM; the
        // raw-mapping cases below then fail (or crash). This pins what the mapping is.
        String bits = System.getProperty("hnapi.bits");
        if (bits != null) {
            expectEq(Integer.parseInt(bits), Native.POINTER_SIZE * 8, "the JVM's pointer size in bits (-Dhnapi.bits)");
        }
        expectEq(Native.POINTER_SIZE, Native.SIZE_T_SIZE, "size_t is pointer-sized (Linux, macOS, Windows)");
        expectEq(Native.SIZE_T_SIZE, Native.getNativeSize(SizeT.class), "SizeT's native size");
        SizeTByReference ref = new SizeTByReference(0xFFFF_FFFFL);
        expectEq((long) Native.SIZE_T_SIZE, ((Memory) ref.getPointer()).size(), "SizeTByReference's room");
        expectEq(0xFFFF_FFFFL, ref.getValue(), "SizeTByReference reads unsigned");
        expectEq(0xFFFF_FFFFL, new SizeT(0xFFFF_FFFFL).longValue(), "SizeT holds UINT32_MAX");
        if (Native.SIZE_T_SIZE == 4) {
            expectThrows(IllegalArgumentException.class, () -> new SizeT(0x1_0000_0000L), "SizeT of 2^32 on 32-bit");
        } else {
            expectEq(0x1_0000_0000L, new SizeT(0x1_0000_0000L).longValue(), "SizeT of 2^32 on 64-bit");
        }
        expectThrows(IllegalArgumentException.class, () -> SizeT.of(-1), "SizeT.of(-1)");
    }

    static void versionAndCodeNames() {
        expect(Hnapi.version().startsWith("hnsecure "), "version: " + Hnapi.version());
        for (HnetRtrn r : HnetRtrn.values()) {
            expectEq(r.name(), Hnapi.codeName(r.code()), "hnapi_code_name(" + r.code() + ")");
            expectEq(r, HnetRtrn.fromCode(r.code()), "fromCode");
        }
        expectEq("HNET_RTRN_UNKNOWN", Hnapi.codeName(HnetRtrn.values().length), "the first value after the table");
        expectEq("HNET_RTRN_UNKNOWN", Hnapi.codeName(-1), "-1");
        try {
            HnetRtrn.fromCode(HnetRtrn.values().length);
            throw new AssertionError("fromCode accepted an unknown value");
        } catch (IllegalArgumentException expected) {
            // as documented
        }
    }

    static void codeTableMatchesHeader() throws Exception {
        String header = System.getProperty("hnapi.header");
        if (header == null) {
            throw new Skip("-Dhnapi.header=PATH not given");
        }
        Map<String, Integer> inHeader = new TreeMap<>();
        Matcher m = Pattern.compile("^\\s*(HNET_RTRN_[A-Z0-9_]+)\\s*=\\s*(-?\\d+)\\s*,", Pattern.MULTILINE)
                .matcher(Files.readString(Path.of(header)));
        while (m.find()) {
            inHeader.put(m.group(1), Integer.valueOf(m.group(2)));
        }
        Map<String, Integer> inJava = new TreeMap<>();
        for (HnetRtrn r : HnetRtrn.values()) {
            inJava.put(r.name(), r.code());
        }
        expect(!inHeader.isEmpty(), "no HNET_RTRN_ codes found in " + header);
        expectEq(inHeader, inJava, "HNET_RTRN_ codes (header vs HnetRtrn.java)");
    }

    static void missingConfig() {
        Path missing = Path.of("/nonexistent-hnapi-java-test/client.toml");
        HnapiException e = expectFailure(HnetRtrn.HNET_RTRN_CONFIGERROR, () -> HnapiClient.open(missing).close());
        expect(e.getMessage().contains("HNET_RTRN_CONFIGERROR"), "message names the code: " + e.getMessage());
        expectFailure(HnetRtrn.HNET_RTRN_CONFIGERROR, () -> HnapiServer.open(missing).close());
    }

    static void badConfigText() {
        expectFailure(HnetRtrn.HNET_RTRN_CONFIGERROR, () -> HnapiClient.openToml("facility = 1\n", null).close());
        expectFailure(HnetRtrn.HNET_RTRN_CONFIGERROR,
                () -> HnapiClient.openToml("facility = \"BC00000098\"\ncredential = \"c.toml\"\ngateways = []\n", Path.of("/tmp")).close());
    }

    static void javaArgumentChecks() {
        try {
            HnapiClient.open(null);
            throw new AssertionError("open(null) was accepted");
        } catch (NullPointerException expected) {
            // as documented
        }
        try (HnapiClient c = HnapiClient.open(clientToml)) {
            try {
                c.sendReceive(r35(controlId()), Duration.ofMillis(-1));
                throw new AssertionError("a negative timeout was accepted");
            } catch (IllegalArgumentException expected) {
                // as documented
            }
        }
    }

    static void nullArguments() {
        // The bindings check every reference parameter themselves: a null never reaches
        // the library (which would answer HNET_RTRN_INVALIDPARAMETER, an HnapiException).
        nullRefused("config", () -> HnapiClient.open(null));
        nullRefused("toml", () -> HnapiClient.openToml(null, null));
        nullRefused("config", () -> HnapiServer.open(null));
        nullRefused("message", () -> new HnapiServer.Request(1, null));
        try (HnapiClient c = HnapiClient.open(clientToml)) {
            nullRefused("message", () -> c.sendReceive((byte[]) null, Duration.ofSeconds(5)));
            nullRefused("message", () -> c.sendReceive((String) null));
            nullRefused("message", () -> c.send(null, null));
            // The client is untouched by them.
            byte[] request = r35(controlId());
            expectAnswers(request, c.sendReceive(request, null), "AA");
        }
        try (HnapiServer s = HnapiServer.open(serverToml)) {
            nullRefused("answer", () -> s.respond(1, null));
        }
        // Where null has a meaning it is not refused: openToml's baseDir (the current
        // directory; see unreachableGateway), a null timeout (the configured one), a null
        // wait (until it exists; see nullWaitWaits), setLogCallback(null, 0) (stop; see
        // logCallback).
    }

    static void nullRefused(String parameter, Runnable call) {
        try {
            call.run();
        } catch (NullPointerException e) {
            expectEq(parameter, e.getMessage(), "the parameter NullPointerException names");
            return;
        }
        throw new AssertionError("null for " + parameter + " was accepted");
    }

    /** This thread's last error, through the raw mapping. */
    static String rawLastError() {
        byte[] buf = new byte[512];
        long n = HnapiLibrary.INSTANCE.hnapi_last_error(buf, SizeT.of(buf.length)).longValue();
        return new String(buf, 0, (int) Math.min(n, buf.length - 1), StandardCharsets.UTF_8);
    }

    /** A client opened through the raw mapping. */
    static Pointer rawOpen() {
        PointerByReference out = new PointerByReference();
        int rc = HnapiLibrary.INSTANCE.hnapi_client_open(clientToml.toString(), out);
        expectEq(0, rc, "hnapi_client_open: " + rawLastError());
        return out.getValue();
    }

    static void rawNullParameters() {
        // HnapiLibrary is public and passes Java nulls as NULL: the C test's NULL cases,
        // through JNA.
        HnapiLibrary lib = HnapiLibrary.INSTANCE;
        int invalid = HnetRtrn.HNET_RTRN_INVALIDPARAMETER.code();
        PointerByReference out = new PointerByReference();
        expectEq(invalid, lib.hnapi_client_open(null, out), "hnapi_client_open(NULL, &c)");
        expectEq(null, out.getValue(), "out-parameters are written only on success");
        expect(rawLastError().contains("config_path is NULL"), "last error: " + rawLastError());
        expectEq(invalid, lib.hnapi_client_open(clientToml.toString(), null), "hnapi_client_open(path, NULL)");
        expectEq(invalid, lib.hnapi_client_open_toml(null, null, out), "hnapi_client_open_toml(NULL, NULL, &c)");
        expectEq(invalid, lib.hnapi_server_open(null, out), "hnapi_server_open(NULL, &s)");
        expectEq(null, out.getValue(), "out-parameters are written only on success");

        Pointer c = rawOpen();
        try {
            byte[] msg = r35(controlId());
            byte[] buf = new byte[4096];
            SizeTByReference len = new SizeTByReference(12345);
            LongByReference id = new LongByReference(777);
            expectEq(invalid, lib.hnapi_send_receive(null, msg, SizeT.of(msg.length), 0, buf, SizeT.of(buf.length), len), "NULL client");
            expectEq(invalid, lib.hnapi_send_receive(c, null, new SizeT(10), 0, buf, SizeT.of(buf.length), len), "NULL msg");
            expectEq(invalid, lib.hnapi_send_receive(c, msg, SizeT.of(msg.length), 0, buf, SizeT.of(buf.length), null), "NULL len");
            expectEq(invalid, lib.hnapi_send_receive(c, msg, SizeT.of(msg.length), 0, null, new SizeT(10), len), "NULL buf, cap 10");
            expectEq(invalid, lib.hnapi_send(null, msg, SizeT.of(msg.length), 0, id), "hnapi_send: NULL client");
            expectEq(invalid, lib.hnapi_send(c, msg, SizeT.of(msg.length), 0, null), "hnapi_send: NULL ticket");
            expectEq(invalid, lib.hnapi_receive(null, 1, 0, buf, SizeT.of(buf.length), len), "hnapi_receive: NULL client");
            expectEq(invalid, lib.hnapi_receive(c, 1, 0, buf, SizeT.of(buf.length), null), "hnapi_receive: NULL len");
            expectEq(invalid, lib.hnapi_server_receive(null, 0, id, buf, SizeT.of(buf.length), len), "NULL server");
            expectEq(invalid, lib.hnapi_server_respond(null, 1, msg, SizeT.of(msg.length)), "NULL server");
            expectEq(invalid, lib.hnapi_server_wait_connected(null, 0), "NULL server");
            expectEq(12345L, len.getValue(), "*len after the failures");
            expectEq(777L, id.getValue(), "*ticket / *request_id after the failures");
            lib.hnapi_client_shutdown(null);
            lib.hnapi_server_shutdown(null);
            lib.hnapi_client_close(null);
            lib.hnapi_server_close(null);
            // The client is untouched by them.
            expectEq(0, lib.hnapi_send_receive(c, msg, SizeT.of(msg.length), 0, buf, SizeT.of(buf.length), len), "then a transaction: " + rawLastError());
            expectAnswers(msg, Arrays.copyOf(buf, (int) len.getValue()), "AA");
        } finally {
            lib.hnapi_client_close(c);
        }

        // The last error: its full length, or cut to fit and NUL-terminated.
        expectEq(invalid, lib.hnapi_client_open(null, out), "again");
        long full = lib.hnapi_last_error(null, new SizeT(0)).longValue();
        byte[] small = new byte[8];
        expectEq(full, lib.hnapi_last_error(small, SizeT.of(small.length)).longValue(), "hnapi_last_error's length when cut");
        expect(full > 7 && small[6] != 0 && small[7] == 0, "cut to 7 bytes and a NUL: " + Arrays.toString(small));
    }

    static void rawBufferTooSmallThenEnough() {
        // HnapiClient hides this (it retries with the size asked for: the ~200 KiB cases
        // below); the raw mapping shows the contract itself, as the C test does.
        HnapiLibrary lib = HnapiLibrary.INSTANCE;
        int tooSmall = HnetRtrn.HNET_RTRN_BUFFERTOOSMALL.code();
        Pointer c = rawOpen();
        try {
            byte[] msg = r35(controlId());
            byte[] tiny = new byte[16];
            SizeTByReference needed = new SizeTByReference();
            expectEq(tooSmall, lib.hnapi_send_receive(c, msg, SizeT.of(msg.length), 0, tiny, SizeT.of(tiny.length), needed), "16 bytes");
            expect(needed.getValue() > tiny.length, "needed " + needed.getValue());
            // The same call again, same thread and message, a buffer of the size needed: the
            // kept answer.
            byte[] buf = new byte[(int) needed.getValue()];
            SizeTByReference len = new SizeTByReference();
            expectEq(0, lib.hnapi_send_receive(c, msg, SizeT.of(msg.length), 0, buf, SizeT.of(buf.length), len), "big enough: " + rawLastError());
            expectEq(needed.getValue(), len.getValue(), "len");
            expectAnswers(msg, buf, "AA");

            // With a ticket: the answer stays with it.
            byte[] msg2 = r35(controlId());
            LongByReference ticket = new LongByReference();
            expectEq(0, lib.hnapi_send(c, msg2, SizeT.of(msg2.length), 0, ticket), "hnapi_send");
            expectEq(tooSmall, lib.hnapi_receive(c, ticket.getValue(), HnapiLibrary.WAIT_FOREVER, tiny, SizeT.of(tiny.length), needed), "16 bytes");
            buf = new byte[(int) needed.getValue()];
            expectEq(0, lib.hnapi_receive(c, ticket.getValue(), 0, buf, SizeT.of(buf.length), len), "big enough: " + rawLastError());
            expectEq(needed.getValue(), len.getValue(), "len");
            expectAnswers(msg2, buf, "AA");
            expectEq(HnetRtrn.HNET_RTRN_UNKNOWNTICKET.code(), lib.hnapi_receive(c, ticket.getValue(), 0, buf, SizeT.of(buf.length), len),
                    "a ticket received once");
        } finally {
            lib.hnapi_client_close(c);
        }
    }

    static void utf8Arguments() {
        // The library names the credential file it could not read: the name must arrive
        // (and come back through hnapi_last_error) intact, even under LANG=C.
        String name = "caf\u00e9-\u2013-\u6e2c\u8a66.toml";
        HnapiException e = expectFailure(HnetRtrn.HNET_RTRN_CONFIGERROR, () -> HnapiClient.openToml(
                "# r\u00e9seau\nfacility = \"BC00000098\"\ncredential = \"" + name + "\"\ngateways = [\"127.0.0.1:1\"]\n",
                Path.of("/nonexistent-hnapi-java-test")).close());
        expect(e.detail().contains("/nonexistent-hnapi-java-test/" + name),
                "the detail names the file as sent: " + e.detail().replaceAll("[^\\x20-\\x7e]", "<?>"));
        System.out.printf("     default charset %s%n", java.nio.charset.Charset.defaultCharset());
    }

    static void simpleRequest() {
        byte[] request = r35(controlId());
        byte[] answer = client.sendReceive(request, null);
        expectAnswers(request, answer, "AA");
        expectEq("RAIEND-PYR-RL", field(answer, "MSH", 3), "MSH-3");
    }

    static void stringRoundTrip() {
        String control = controlId();
        // Non-ASCII text must reach the receiver as UTF-8 and come back the same.
        String note = "NTE|||Caf\u00e9 \u00e0 Qu\u00e9bec \u2013 \u00d8resund";
        String request = "MSH|^~\\&|HNAPIJAVA|" + FACILITY + "|HNSIM-ECHO|BC0003000|20260101120000|TEST|R03|" + control
                + "|D|2.3\r" + note + "\r";
        String answer = client.sendReceive(request);
        expect(answer.contains(note), "the echoed segment, decoded as UTF-8: " + answer.replace('\r', '\n'));
        expectEq(control, field(answer.getBytes(StandardCharsets.UTF_8), "MSA", 2), "MSA-2");
    }

    static void unknownTicket() {
        expectFailure(HnetRtrn.HNET_RTRN_UNKNOWNTICKET, () -> client.receive(0x7fff_ffff_0000_1234L, Duration.ZERO));
        // A ticket whose answer was received is unknown afterwards.
        byte[] request = r35(controlId());
        long ticket = client.send(request, null);
        expectAnswers(request, client.receive(ticket, Duration.ofSeconds(30)), "AA");
        expectFailure(HnetRtrn.HNET_RTRN_UNKNOWNTICKET, () -> client.receive(ticket, Duration.ZERO));
    }

    static void noMsh() {
        byte[] notHl7 = "PID||9029274643^^^BC^PH\rZIH|||||K\r".getBytes(StandardCharsets.US_ASCII);
        HnapiException e = expectFailure(HnetRtrn.HNET_RTRN_INVALIDFORMATERROR, () -> client.sendReceive(notHl7, null));
        expect(!e.detail().contains("9029274643"), "the last error carries message text: " + e.detail());
        expectFailure(HnetRtrn.HNET_RTRN_INVALIDFORMATERROR, () -> client.send(notHl7, null));
        expectFailure(HnetRtrn.HNET_RTRN_INVALIDFORMATERROR,
                () -> client.sendReceive("hello".getBytes(StandardCharsets.US_ASCII), null));
    }

    /** A request to HNSIM-ECHO of about {@code bytes} bytes: NTE segments after the MSH. */
    static byte[] bigEcho(String control, int bytes) {
        List<String> segs = new ArrayList<>();
        int size = 0;
        for (int i = 0; size < bytes; i++) {
            String s = "NTE|" + i + "||" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".repeat(27) + "-" + i;
            segs.add(s);
            size += s.length() + 1;
        }
        return message("HNSIM-ECHO", "R03", control, segs.toArray(new String[0]));
    }

    static void expectEchoed(byte[] request, byte[] answer) {
        expectAnswers(request, answer, "AA");
        List<String> sent = Arrays.asList(segments(request)).subList(1, segments(request).length);
        // The answer: MSH, MSA, one ERR, then every segment of the request after its MSH.
        String[] got = segments(answer);
        expect(got.length >= 3 && got[1].startsWith("MSA|") && got[2].startsWith("ERR|"), "MSH, MSA, ERR first");
        List<String> back = Arrays.asList(got).subList(3, got.length);
        expectEq(sent.size(), back.size(), "echoed segments");
        expect(sent.equals(back), "the echoed segments differ from those sent");
    }

    static void largeAnswerSendReceive() {
        byte[] request = bigEcho(controlId(), 200 * 1024);
        byte[] answer = client.sendReceive(request, null);
        expect(answer.length > 200 * 1024, "answer length " + answer.length);
        expectEchoed(request, answer);
    }

    static void largeAnswerTicket() {
        byte[] request = bigEcho(controlId(), 200 * 1024);
        long ticket = client.send(request, null);
        byte[] answer = client.receive(ticket, Hnapi.FOREVER);
        expect(answer != null && answer.length > 200 * 1024, "answer length " + (answer == null ? -1 : answer.length));
        expectEchoed(request, answer);
    }

    /** The credential named by CLIENT_TOML, as an absolute path. */
    static Path credentialPath() throws Exception {
        Matcher m = Pattern.compile("^\\s*credential\\s*=\\s*\"([^\"]*)\"", Pattern.MULTILINE)
                .matcher(Files.readString(clientToml));
        expect(m.find(), "no credential = \"...\" in " + clientToml);
        return clientToml.getParent().resolve(m.group(1)).toAbsolutePath().normalize();
    }

    static String tomlString(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static void unreachableGateway() throws Exception {
        String toml = "facility = " + tomlString(FACILITY) + "\n"
                + "credential = " + tomlString(credentialPath().toString()) + "\n"
                + "gateways = [\"127.0.0.1:1\"]\n"
                + "timeout_secs = 10\n"
                + "connect_timeout_secs = 2\n";
        try (HnapiClient unreachable = HnapiClient.openToml(toml, null)) {
            byte[] request = r35(controlId());
            long t0 = System.nanoTime();
            byte[] answer = unreachable.sendReceive(request, null);
            long ms = (System.nanoTime() - t0) / 1_000_000;
            expectAnswers(request, answer, "AR");
            expectEq("HNAPI", field(answer, "MSH", 3), "MSH-3");
            expect(field(answer, "MSA", 3).startsWith("TXFR024E"), "MSA-3: " + field(answer, "MSA", 3));
            expect(ms < 10_000, "took " + ms + " ms");
        }
    }

    static void noResponseTimeout() {
        byte[] request = message("HNSIM-NORESPONSE", "R03", controlId(), "PID||9029274643^^^BC^PH");
        long t0 = System.nanoTime();
        byte[] answer = client.sendReceive(request, Duration.ofMillis(1000));
        long ms = (System.nanoTime() - t0) / 1_000_000;
        expectAnswers(request, answer, "AR");
        expect(field(answer, "MSA", 3).startsWith("TXFR024E"), "MSA-3: " + field(answer, "MSA", 3));
        expect(ms >= 500 && ms < 2000, "answered after " + ms + " ms");
        System.out.printf("     answered after %d ms by %s: MSA-3 %s%n", ms, field(answer, "MSH", 3), field(answer, "MSA", 3));
    }

    static void concurrentSendReceive() throws Exception {
        int threads = 16;
        int each = 100;
        AtomicInteger ok = new AtomicInteger();
        Queue<String> problems = new ConcurrentLinkedQueue<>();
        CountDownLatch start = new CountDownLatch(1);
        List<Thread> workers = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            Thread w = new Thread(() -> {
                try {
                    start.await();
                    for (int i = 0; i < each; i++) {
                        byte[] request = r35(controlId());
                        byte[] answer = client.sendReceive(request, null);
                        String want = field(request, "MSH", 10);
                        String got = field(answer, "MSA", 2);
                        if (!want.equals(got) || !"AA".equals(field(answer, "MSA", 1))) {
                            problems.add("sent " + want + ", answer MSA " + field(answer, "MSA", 1) + " " + got);
                        } else {
                            ok.incrementAndGet();
                        }
                    }
                } catch (Throwable e) {
                    problems.add(e.toString());
                }
            }, "sender-" + t);
            workers.add(w);
            w.start();
        }
        start.countDown();
        for (Thread w : workers) {
            w.join(TimeUnit.MINUTES.toMillis(3));
            expect(!w.isAlive(), w.getName() + " still runs after 3 minutes");
        }
        expect(problems.isEmpty(), problems.size() + " problems, first: " + problems.peek());
        expectEq(threads * each, ok.get(), "matched answers");
    }

    static void ticketsInReverse() {
        int n = 50;
        byte[][] requests = new byte[n][];
        long[] tickets = new long[n];
        for (int i = 0; i < n; i++) {
            requests[i] = r35(controlId());
            tickets[i] = client.send(requests[i], null);
        }
        for (int i = n - 1; i >= 0; i--) {
            byte[] answer = client.receive(tickets[i], Duration.ofSeconds(30));
            expect(answer != null, "no answer for ticket " + i + " within 30 s");
            expectAnswers(requests[i], answer, "AA");
        }
    }

    static void pendingTicket() {
        byte[] request = message("HNSIM-NORESPONSE", "R03", controlId(), "PID||9029274643^^^BC^PH");
        long ticket = client.send(request, Duration.ofMillis(1500));
        expect(client.receive(ticket, Duration.ZERO) == null, "a poll found an answer");
        expect(client.receive(ticket, Duration.ofMillis(300)) == null, "a 300 ms wait found an answer");
        byte[] answer = client.receive(ticket, Hnapi.FOREVER);
        expectAnswers(request, answer, "AR");
    }

    static void nullWaitWaits() throws Exception {
        // A client: receive(ticket, null) waits until the answer exists, here the AR at
        // the transaction's 1000 ms timeout (as the C# bindings' Receive(ticket) does).
        byte[] request = message("HNSIM-NORESPONSE", "R03", controlId(), "PID||9029274643^^^BC^PH");
        long ticket = client.send(request, Duration.ofMillis(1000));
        long t0 = System.nanoTime();
        byte[] answer = client.receive(ticket, null);
        long ms = (System.nanoTime() - t0) / 1_000_000;
        expect(answer != null, "receive(ticket, null) returned null: it did not wait for the answer");
        expectAnswers(request, answer, "AR");
        expect(ms >= 500, "receive(ticket, null) returned after " + ms + " ms, before the 1000 ms timeout could end it");

        // A server: receive(null) waits until a request comes.
        try (HnapiServer server = HnapiServer.open(serverToml)) {
            expect(server.waitConnected(Duration.ofSeconds(15)), "the server application did not connect within 15 s");
            AtomicReference<Object> outcome = new AtomicReference<>();
            Thread receiving = new Thread(() -> {
                try {
                    HnapiServer.Request r = server.receive(null);
                    outcome.set(r == null ? "null" : r);
                    if (r != null) {
                        server.respond(r.id(), ack(r.message()));
                    }
                } catch (Throwable e) {
                    outcome.set(e);
                }
            }, "null-wait-receiver");
            receiving.start();
            Thread.sleep(500);
            expect(outcome.get() == null, "server.receive(null) returned before any request was sent: " + outcome.get());
            byte[] demo = message("HNAPI-DEMO", "R03", controlId(), "PID||9029274643^^^BC^PH");
            expectAnswers(demo, client.sendReceive(demo, Duration.ofSeconds(10)), "AA");
            receiving.join(5000);
            expect(outcome.get() instanceof HnapiServer.Request, "server.receive(null) ended with " + outcome.get());
        }
    }

    /** What the JVM may add of its own meanwhile: threads, open files. */
    static final long[] TOLERANCE = {2, 2};

    /** This process's thread and open-file counts (Linux), or null without /proc. */
    static long[] usage() throws IOException {
        Path task = Path.of("/proc/self/task");
        Path fd = Path.of("/proc/self/fd");
        if (!Files.isDirectory(task) || !Files.isDirectory(fd)) {
            return null;
        }
        try (Stream<Path> threads = Files.list(task); Stream<Path> files = Files.list(fd)) {
            return new long[] {threads.count(), files.count()};
        }
    }

    /**
     * The counts once back within the tolerance of {@code before} (closed clients'
     * threads end shortly after the close returns), or as they are after 5 s.
     */
    static long[] settled(long[] before, Runnable each) throws Exception {
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        while (true) {
            each.run();
            long[] now = usage();
            if (now == null || (now[0] <= before[0] + TOLERANCE[0] && now[1] <= before[1] + TOLERANCE[1])
                    || System.nanoTime() > until) {
                return now;
            }
            Thread.sleep(50);
        }
    }

    static void expectNoGrowth(long[] before, long[] now, String when) {
        expect(now[0] <= before[0] + TOLERANCE[0], when + ": " + now[0] + " threads, " + before[0] + " before");
        expect(now[1] <= before[1] + TOLERANCE[1], when + ": " + now[1] + " open files, " + before[1] + " before");
    }

    static void openCloseMany() throws Exception {
        // What the JVM, JNA and the library set up once comes with the first client.
        HnapiClient.open(clientToml).close();
        long[] before = usage();
        if (before == null) {
            System.out.println("     no /proc/self: threads and open files not compared");
        }

        // An open client holds threads and files of its own, so a close that did not reach
        // hnapi_client_close would show below.
        List<HnapiClient> held = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            held.add(HnapiClient.open(clientToml));
        }
        long[] holding = usage();
        held.forEach(HnapiClient::close);
        if (before != null) {
            expect(holding[0] >= before[0] + 10,
                    "10 open clients add only " + (holding[0] - before[0]) + " threads: the comparison below would see no leak");
        }

        for (int i = 0; i < 1000; i++) {
            HnapiClient.open(clientToml).close();
        }
        long[] after = settled(before, () -> {});

        // Clients never closed: their Cleaner closes them once unreachable. Opened on a
        // thread that has ended, so that nothing still refers to them.
        Thread forgetting = new Thread(() -> {
            for (int i = 0; i < 10; i++) {
                HnapiClient.open(clientToml);
            }
        }, "forgetting");
        forgetting.start();
        forgetting.join();
        long[] cleaned = settled(before, System::gc);

        if (before != null) {
            System.out.printf("     threads %d, with 10 clients open %d, after 1000 %d, after 10 cleaned %d;"
                    + " open files %d, %d, %d, %d%n", before[0], holding[0], after[0], cleaned[0],
                    before[1], holding[1], after[1], cleaned[1]);
            expectNoGrowth(before, after, "after 1000 open/close");
            expectNoGrowth(before, cleaned, "after 10 clients left to the Cleaner");
        }
    }

    /** --panic-case: HNAPI_TEST_PANIC=hnapi_send_receive with a test-panic library. */
    static void forcedPanic() {
        expectEq("hnapi_send_receive", System.getenv("HNAPI_TEST_PANIC"), "HNAPI_TEST_PANIC");
        try (HnapiClient c = HnapiClient.open(clientToml)) {
            HnapiException e = null;
            try {
                c.sendReceive(message("HNSIM-ECHO", "R03", controlId()), Duration.ofSeconds(10));
            } catch (HnapiException thrown) {
                e = thrown;
            }
            expect(e != null, "sendReceive succeeded: is the library in jna.library.path built with --features test-panic?");
            System.out.println("     " + e.getMessage());
            expectEq(HnetRtrn.HNET_RTRN_INTERNALERROR, e.code(), "code");
            expect(e.getMessage().contains("internal error in hnapi_send_receive"),
                    "the message does not name the function: " + e.getMessage());

            // The library and this client still serve: a ticket's answer from the echo.
            String control = controlId();
            long ticket = c.send(message("HNSIM-ECHO", "R03", control), Duration.ofSeconds(10));
            byte[] answer = c.receive(ticket, null);
            expect(answer != null, "no answer after the panic");
            String text = new String(answer, StandardCharsets.UTF_8);
            expect(text.contains("\rMSA|AA|" + control + "|"),
                    "the answer after the panic has no MSA|AA|" + control + ": " + text.replace('\r', '\n'));
        }
    }

    /** A request above this many bytes gets an answer with a {@link #BIG_ANSWER_NTE} segment. */
    static final int BIG_ANSWER_FROM = 32 * 1024;
    /** More than the bindings' first answer buffer. */
    static final String BIG_ANSWER_NTE = "NTE|||" + "z".repeat(100 * 1024);

    /** An AA ACK from the server application for {@code request}. */
    static byte[] ack(byte[] request) {
        String answer = "MSH|^~\\&|HNAPI-DEMO|BC00000099|" + field(request, "MSH", 3) + "|" + field(request, "MSH", 4)
                + "|20260101120001||ACK^" + field(request, "MSH", 9) + "|S" + field(request, "MSH", 10) + "|D|2.3\r"
                + "MSA|AA|" + field(request, "MSH", 10) + "|JAVA SERVER OK\r"
                + (request.length > BIG_ANSWER_FROM ? BIG_ANSWER_NTE + "\r" : "");
        return answer.getBytes(StandardCharsets.UTF_8);
    }

    static void serverApplication() throws Exception {
        AtomicBoolean stop = new AtomicBoolean();
        AtomicInteger served = new AtomicInteger();
        AtomicInteger largest = new AtomicInteger();
        AtomicReference<Throwable> serverError = new AtomicReference<>();
        try (HnapiServer server = HnapiServer.open(serverToml)) {
            expect(server.receive(Duration.ZERO) == null, "a request before any was sent");
            expectFailure(HnetRtrn.HNET_RTRN_UNKNOWNREQUEST, () -> server.respond(987_654_321L, ack(r35("X"))));
            Thread answering = new Thread(() -> {
                try {
                    while (!stop.get()) {
                        HnapiServer.Request request = server.receive(Duration.ofMillis(200));
                        if (request != null) {
                            largest.accumulateAndGet(request.message().length, Math::max);
                            server.respond(request.id(), ack(request.message()));
                            served.incrementAndGet();
                        }
                    }
                } catch (Throwable e) {
                    serverError.set(e);
                }
            }, "server-app");
            answering.start();
            try {
                // The server connects in the background: until it is registered, the
                // gateway answers AR for HNAPI-DEMO. Wait for the first AA.
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
                byte[] first;
                byte[] firstRequest;
                do {
                    firstRequest = message("HNAPI-DEMO", "R03", controlId(), "PID||9029274643^^^BC^PH");
                    first = client.sendReceive(firstRequest, Duration.ofSeconds(5));
                } while (!"AA".equals(field(first, "MSA", 1)) && System.nanoTime() < until && sleep(100));
                expectAnswers(firstRequest, first, "AA");
                expectEq("HNAPI-DEMO", field(first, "MSH", 3), "MSH-3 (the Java server's)");
                expectEq("JAVA SERVER OK", field(first, "MSA", 3), "MSA-3");
                for (int i = 0; i < 10; i++) {
                    byte[] request = message("HNAPI-DEMO", "R03", controlId(), "PID||9029274643^^^BC^PH");
                    expectAnswers(request, client.sendReceive(request, Duration.ofSeconds(10)), "AA");
                }
                // A request larger than the server's first buffer.
                byte[] big = bigEcho(controlId(), 100 * 1024);
                big = new String(big, StandardCharsets.UTF_8).replaceFirst("\\|HNSIM-ECHO\\|", "|HNAPI-DEMO|")
                        .getBytes(StandardCharsets.UTF_8);
                byte[] bigAnswer = client.sendReceive(big, Duration.ofSeconds(10));
                expectAnswers(big, bigAnswer, "AA");
                expect(largest.get() >= 100 * 1024, "the largest request the server saw: " + largest.get() + " bytes");
                // Its answer is larger than the bindings' first buffer: sendReceive asked
                // again with a larger one, which must return the kept answer without sending
                // the request a second time (the server's count below would show it).
                expect(Arrays.asList(segments(bigAnswer)).contains(BIG_ANSWER_NTE), "the large answer did not come back whole");
            } finally {
                stop.set(true);
                answering.join(5000);
            }
            expect(!answering.isAlive(), "the server thread did not stop");
            expect(serverError.get() == null, "server thread: " + serverError.get());
            expectEq(12, served.get(), "requests served (one sent twice?)");
        }
    }

    static boolean sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return true;
    }

    static void logCallback() throws Exception {
        Queue<String> lines = new ConcurrentLinkedQueue<>();
        Queue<String> threads = new ConcurrentLinkedQueue<>();
        String marker = "HNAPISECRETMARKER" + RUN;
        Hnapi.setLogCallback((level, line) -> {
            lines.add(level + " " + line);
            threads.add(Thread.currentThread().getName());
            if (level < 1 || level > 5) {
                lines.add("BAD LEVEL " + level);
            }
        }, 5);
        try {
            // JNA's callback stub must stay referenced by the bindings, not by us.
            System.gc();
            byte[] echo = message("HNSIM-ECHO", "R03", controlId(), "NTE|||" + marker, "PID||9029274643^^^BC^PH");
            expectEchoed(echo, client.sendReceive(echo, null));
            try (HnapiClient other = HnapiClient.open(clientToml)) {
                byte[] request = r35(controlId());
                expectAnswers(request, other.sendReceive(request, null), "AA");
            }
            expectFailure(HnetRtrn.HNET_RTRN_INVALIDFORMATERROR,
                    () -> client.sendReceive((marker + "|not hl7").getBytes(StandardCharsets.US_ASCII), null));
            System.gc();
            byte[] again = r35(controlId());
            expectAnswers(again, client.sendReceive(again, null), "AA");
            // A server application connects on the library's own thread: its lines come
            // from a thread that JNA attached (named by the bindings).
            try (HnapiServer server = HnapiServer.open(serverToml)) {
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                while (!threads.contains("hnapi-log") && System.nanoTime() < until) {
                    Thread.sleep(20);
                }
                expect(threads.contains("hnapi-log"), "no line from a library thread; threads: " + threads);
                expect(server.receive(Duration.ZERO) == null, "a request nobody sent");
            }
        } finally {
            Hnapi.setLogCallback(null, 0);
        }
        expect(!lines.isEmpty(), "no log line arrived");
        for (String line : lines) {
            expect(!line.contains(marker), "a log line carries message text: " + line);
            expect(!line.contains("9029274643"), "a log line carries a PHN: " + line);
            expect(!line.startsWith("BAD LEVEL"), line);
        }
        int count = lines.size();
        byte[] after = r35(controlId());
        expectAnswers(after, client.sendReceive(after, null), "AA");
        expectEq(count, lines.size(), "log lines after the callback was removed");
        System.out.printf("     %d log lines from threads %s%n", count, new java.util.TreeSet<>(threads));
    }

    static void closeWakesReceive() throws Exception {
        HnapiClient c = HnapiClient.open(clientToml);
        byte[] request = message("HNSIM-NORESPONSE", "R03", controlId(), "PID||9029274643^^^BC^PH");
        long ticket = c.send(request, Duration.ofSeconds(30));
        AtomicReference<Throwable> outcome = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(1);
        Thread waiter = new Thread(() -> {
            try {
                c.receive(ticket, Hnapi.FOREVER);
            } catch (Throwable e) {
                outcome.set(e);
            } finally {
                done.countDown();
            }
        }, "waiter");
        waiter.start();
        Thread.sleep(300);
        long t0 = System.nanoTime();
        c.close();
        long closeMs = (System.nanoTime() - t0) / 1_000_000;
        expect(done.await(2, TimeUnit.SECONDS), "the waiting receive did not return within 2 s of close");
        expect(outcome.get() instanceof IllegalStateException, "the waiting receive ended with " + outcome.get());
        expect(closeMs < 2000, "close took " + closeMs + " ms");
    }

    static void closedClient() {
        HnapiClient c = HnapiClient.open(clientToml);
        c.close();
        c.close();
        expect(c.isClosed(), "isClosed");
        for (Runnable call : List.<Runnable>of(
                () -> c.sendReceive(r35(controlId()), null),
                () -> c.send(r35(controlId()), null),
                () -> c.receive(1, Duration.ZERO))) {
            try {
                call.run();
                throw new AssertionError("a call on a closed client succeeded");
            } catch (IllegalStateException expected) {
                // as documented
            }
        }
        HnapiServer s = HnapiServer.open(serverToml);
        s.close();
        s.close();
        try {
            s.receive(Duration.ZERO);
            throw new AssertionError("receive on a closed server succeeded");
        } catch (IllegalStateException expected) {
            // as documented
        }
    }
}
