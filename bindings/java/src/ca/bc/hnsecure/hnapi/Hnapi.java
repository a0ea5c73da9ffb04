package ca.bc.hnsecure.hnapi;

import com.sun.jna.CallbackThreadInitializer;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.function.BiConsumer;

/**
 * Library-wide calls of {@code libhnapi}: its version, code names and the log callback.
 *
 * <h2>Durations</h2>
 * Timeouts and waits are {@link Duration}s, passed to the library in milliseconds (a
 * positive duration under 1 ms counts as 1 ms; a negative one is an
 * {@link IllegalArgumentException}):
 * <ul>
 *   <li>a transaction <em>timeout</em> of {@code null} or zero means the configured
 *       default ({@code timeout_secs}, 70 s unless configured);
 *   <li>a <em>wait</em> of {@code null} or {@link #FOREVER} (or anything longer) waits
 *       until the answer or request exists, as the C ABI's {@code UINT32_MAX} does (and
 *       as a null wait does in the .NET bindings); zero polls.
 * </ul>
 */
public final class Hnapi {
    /** A wait that lasts until the answer (every transaction ends by its timeout) or the request comes. */
    public static final Duration FOREVER = Duration.ofMillis(0xFFFF_FFFFL);

    static final HnapiLibrary LIB = HnapiLibrary.INSTANCE;

    /**
     * Long waits are made of native waits this long, so that {@code close()} on another
     * thread is noticed within one slice (the ABI has no way to wake a waiting call, and a
     * handle must not be closed while a call uses it). The answer itself is returned as
     * soon as it exists: slicing adds no latency.
     */
    static final long SLICE_MS = 200;

    private static final Object LOG_LOCK = new Object();
    /** The callback the library holds: kept here so that JNA's stub is never collected while in use. */
    private static HnapiLibrary.HnapiLogCallback logCallback;
    private static boolean shutdownHookAdded;

    private Hnapi() {}

    /** The library's version, e.g. {@code "hnsecure 0.1.0"}. */
    public static String version() {
        return LIB.hnapi_version().getString(0, "UTF-8");
    }

    /** The C name of a return code ({@code "HNET_RTRN_SUCCESS"}, …), or {@code "HNET_RTRN_UNKNOWN"}. */
    public static String codeName(int code) {
        return LIB.hnapi_code_name(code).getString(0, "UTF-8");
    }

    /**
     * Sends the library's log lines of level 1 (error) to {@code maxLevel} (5, trace) to
     * {@code sink} as (level, line). {@code sink} may be called from any thread, the
     * library's own included, and must be thread-safe and quick; exceptions it throws are
     * dropped (they cannot cross into the library). A {@code null} sink or a
     * {@code maxLevel} of 0 or less stops logging. Replaces any earlier sink; when this
     * returns, the earlier one is no longer called. The library never logs message text.
     *
     * <p>Do not call hnapi functions that close handles from inside {@code sink}.
     */
    public static void setLogCallback(BiConsumer<Integer, String> sink, int maxLevel) {
        synchronized (LOG_LOCK) {
            HnapiLibrary.HnapiLogCallback cb = null;
            if (sink != null && maxLevel > 0) {
                cb = new HnapiLibrary.HnapiLogCallback() {
                    @Override
                    public void invoke(int level, Pointer line, Pointer ctx) {
                        try {
                            sink.accept(level, line == null ? "" : line.getString(0, "UTF-8"));
                        } catch (Throwable t) {
                            // Nothing may propagate into native code; the host's sink failed.
                        }
                    }
                };
                // Library threads stay attached (as daemons) between lines instead of
                // attaching and detaching for every line; JNA detaches them when they end.
                Native.setCallbackThreadInitializer(cb, new CallbackThreadInitializer(true, false, "hnapi-log"));
                if (!shutdownHookAdded) {
                    // No log line may reach a JVM that is shutting down.
                    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                        synchronized (LOG_LOCK) {
                            LIB.hnapi_set_log_callback(null, null, 0);
                            logCallback = null;
                        }
                    }, "hnapi-log-off"));
                    shutdownHookAdded = true;
                }
            }
            // The library waits for lines being delivered before it replaces the callback,
            // so the previous stub may be released only after this call.
            LIB.hnapi_set_log_callback(cb, null, cb == null ? 0 : maxLevel);
            logCallback = cb;
        }
    }

    // ---- shared by the package ----

    /** This thread's last error (call right after the failing call, on the same thread). */
    static String lastError() {
        byte[] buf = new byte[512];
        long n = LIB.hnapi_last_error(buf, SizeT.of(buf.length)).longValue();
        if (n >= buf.length) {
            buf = new byte[(int) Math.min(n + 1, Integer.MAX_VALUE - 8)];
            n = LIB.hnapi_last_error(buf, SizeT.of(buf.length)).longValue();
        }
        return new String(buf, 0, (int) Math.min(n, buf.length - 1), StandardCharsets.UTF_8);
    }

    /** The exception for a non-zero code, with this thread's last error. */
    static HnapiException failure(int rc, String function) {
        return new HnapiException(rc, function, lastError());
    }

    /** A transaction timeout as {@code timeout_ms}: 0 for the configured default. */
    static int timeoutMs(Duration timeout) {
        if (timeout == null || timeout.isZero()) {
            return 0;
        }
        if (timeout.isNegative()) {
            throw new IllegalArgumentException("timeout is negative: " + timeout);
        }
        if (timeout.compareTo(FOREVER) >= 0) {
            return HnapiLibrary.WAIT_FOREVER;
        }
        long ms = Math.max(1, ceilMillis(timeout));
        return (int) Math.min(ms, 0xFFFF_FFFFL);
    }

    /** A wait in milliseconds, or -1 for forever ({@code null} included). */
    static long waitMs(Duration wait) {
        if (wait == null) {
            return -1;
        }
        if (wait.isZero()) {
            return 0;
        }
        if (wait.isNegative()) {
            throw new IllegalArgumentException("wait is negative: " + wait);
        }
        if (wait.compareTo(FOREVER) >= 0) {
            return -1;
        }
        return Math.max(1, ceilMillis(wait));
    }

    private static long ceilMillis(Duration d) {
        long ms = d.toMillis();
        return d.minusMillis(ms).isZero() ? ms : ms + 1;
    }

    /** A size the library asked for, as a Java array length. */
    static int bufferSize(long needed) {
        if (needed < 0 || needed > Integer.MAX_VALUE - 8) {
            throw new HnapiException(HnetRtrn.HNET_RTRN_TOOLARGE.code(), "hnapi (Java)",
                    needed + " bytes do not fit a Java array");
        }
        return (int) needed;
    }

    /**
     * The deadline of a sliced wait: how long the next native wait may last, or -1 when
     * the wait is over. {@code waitMs} -1 is forever; 0 polls once.
     */
    static final class Deadline {
        private final boolean forever;
        private final long end;
        private boolean first = true;

        Deadline(long waitMs) {
            this.forever = waitMs < 0;
            this.end = System.nanoTime() + Math.max(0, waitMs) * 1_000_000L;
        }

        /** Milliseconds for the next native wait, or -1 when the wait is over. */
        long nextSlice() {
            if (forever) {
                return SLICE_MS;
            }
            long left = end - System.nanoTime();
            if (left <= 0) {
                if (first) {
                    first = false;
                    return 0;
                }
                return -1;
            }
            first = false;
            return Math.min(SLICE_MS, (left + 999_999) / 1_000_000);
        }
    }
}
