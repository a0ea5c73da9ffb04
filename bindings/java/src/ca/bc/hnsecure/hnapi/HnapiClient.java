package ca.bc.hnsecure.hnapi;

import static ca.bc.hnsecure.hnapi.Hnapi.LIB;

import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Objects;

/**
 * A sending application's connection to an hnsecure gateway ({@code HnapiClient} of
 * {@code libhnapi}): sends HL7 v2 requests and receives their answers.
 *
 * <p>Every request gets an HL7 answer: the receiver's, or an AR ACK that the library built
 * (MSH-3 {@code HNAPI}, MSA-3 {@code TXFR024E} or {@code TXFR029E}) because the gateway
 * could not be reached, refused this facility, or the transaction timed out. Those are
 * returned, not thrown. An {@link HnapiException} means no valid HL7 answer could be
 * formed (a message without MSH, a bad configuration, …).
 *
 * <p>Thread-safe: share one client between all the threads of a process. {@link #close()}
 * waits for the calls in flight (a waiting {@link #receive} notices within 200 ms, a
 * {@link #sendReceive} finishes its transaction); calls after it throw
 * {@link IllegalStateException}. A client that is never closed is closed when it becomes
 * unreachable, but close it.
 */
public final class HnapiClient implements AutoCloseable {
    /** The answer buffer a call starts with; a larger answer costs one more native call, not a resend. */
    static final int INITIAL_BUFFER = 8 * 1024;

    private static final int TOO_SMALL = HnetRtrn.HNET_RTRN_BUFFERTOOSMALL.code();
    private static final int PENDING = HnetRtrn.HNET_RTRN_PENDING.code();

    private final NativeHandle handle;
    private final Cleaner.Cleanable cleanable;

    private HnapiClient(Pointer client) {
        this.handle = new NativeHandle(client, LIB::hnapi_client_close, "HnapiClient");
        this.cleanable = NativeHandle.CLEANER.register(this, handle);
    }

    /**
     * Opens a client from the {@code client.toml} at {@code config}.
     *
     * @throws HnapiException {@code HNET_RTRN_CONFIGERROR} when the file or its credential
     *     cannot be used (the detail names the key and file)
     */
    public static HnapiClient open(Path config) {
        Objects.requireNonNull(config, "config");
        PointerByReference out = new PointerByReference();
        int rc = LIB.hnapi_client_open(config.toString(), out);
        if (rc != 0) {
            throw Hnapi.failure(rc, "hnapi_client_open");
        }
        return new HnapiClient(out.getValue());
    }

    /**
     * Opens a client from configuration text (what a {@code client.toml} holds); relative
     * paths in it are taken from {@code baseDir}, or from the current directory when
     * {@code baseDir} is {@code null}.
     */
    public static HnapiClient openToml(String toml, Path baseDir) {
        Objects.requireNonNull(toml, "toml");
        PointerByReference out = new PointerByReference();
        int rc = LIB.hnapi_client_open_toml(toml, baseDir == null ? null : baseDir.toString(), out);
        if (rc != 0) {
            throw Hnapi.failure(rc, "hnapi_client_open_toml");
        }
        return new HnapiClient(out.getValue());
    }

    /**
     * Sends {@code message} and waits for its answer, at most {@code timeout}
     * ({@code null} or zero: the configured default).
     *
     * @return the answer, byte for byte as its author wrote it
     * @throws HnapiException when no HL7 answer could be formed
     */
    public byte[] sendReceive(byte[] message, Duration timeout) {
        // Our own copy: a retry after HNET_RTRN_BUFFERTOOSMALL must pass the same bytes,
        // or the library would send the message a second time.
        byte[] msg = Objects.requireNonNull(message, "message").clone();
        int timeoutMs = Hnapi.timeoutMs(timeout);
        try {
            return handle.use(c -> {
                byte[] buf = new byte[INITIAL_BUFFER];
                SizeTByReference len = new SizeTByReference();
                int rc = LIB.hnapi_send_receive(c, msg, SizeT.of(msg.length), timeoutMs, buf, SizeT.of(buf.length), len);
                // ABI contract 4: the same call again, on the same thread, with the same
                // message and a buffer of *len bytes returns the kept answer (not resent).
                for (int i = 0; rc == TOO_SMALL && i < 3; i++) {
                    buf = new byte[Hnapi.bufferSize(len.getValue())];
                    rc = LIB.hnapi_send_receive(c, msg, SizeT.of(msg.length), timeoutMs, buf, SizeT.of(buf.length), len);
                }
                if (rc != 0) {
                    throw Hnapi.failure(rc, "hnapi_send_receive");
                }
                return Arrays.copyOf(buf, (int) len.getValue());
            });
        } finally {
            Reference.reachabilityFence(this);
        }
    }

    /**
     * Sends {@code message} (encoded as UTF-8) with the configured timeout and returns the
     * answer decoded as UTF-8.
     */
    public String sendReceive(String message) {
        Objects.requireNonNull(message, "message");
        return new String(sendReceive(message.getBytes(StandardCharsets.UTF_8), null), StandardCharsets.UTF_8);
    }

    /**
     * Starts a transaction and returns at once with the ticket to {@link #receive} its
     * answer with. {@code timeout}: {@code null} or zero for the configured default.
     *
     * @throws HnapiException {@code HNET_RTRN_INVALIDFORMATERROR} for a message without a
     *     usable MSH, …
     */
    public long send(byte[] message, Duration timeout) {
        Objects.requireNonNull(message, "message");
        int timeoutMs = Hnapi.timeoutMs(timeout);
        try {
            return handle.use(c -> {
                LongByReference ticket = new LongByReference();
                int rc = LIB.hnapi_send(c, message, SizeT.of(message.length), timeoutMs, ticket);
                if (rc != 0) {
                    throw Hnapi.failure(rc, "hnapi_send");
                }
                return ticket.getValue();
            });
        } finally {
            Reference.reachabilityFence(this);
        }
    }

    /**
     * The answer for {@code ticket}, waiting up to {@code wait}: {@code null} or
     * {@link Hnapi#FOREVER} waits until it exists, which is at most the transaction's
     * timeout; zero polls. Returns {@code null} when a finite wait ended before it came
     * (the ticket stays valid) or when this thread is interrupted while waiting (its
     * interrupt status stays set).
     *
     * @throws HnapiException {@code HNET_RTRN_UNKNOWNTICKET} for a ticket that is unknown
     *     or whose answer was already received
     */
    public byte[] receive(long ticket, Duration wait) {
        Hnapi.Deadline deadline = new Hnapi.Deadline(Hnapi.waitMs(wait));
        try {
            for (long slice = deadline.nextSlice(); slice >= 0; slice = deadline.nextSlice()) {
                int waitMs = (int) slice;
                byte[] answer = handle.use(c -> receiveOnce(c, ticket, waitMs));
                if (answer != null) {
                    return answer;
                }
                if (Thread.currentThread().isInterrupted()) {
                    return null;
                }
            }
            return null;
        } finally {
            Reference.reachabilityFence(this);
        }
    }

    private static byte[] receiveOnce(Pointer c, long ticket, int waitMs) {
        byte[] buf = new byte[INITIAL_BUFFER];
        SizeTByReference len = new SizeTByReference();
        int rc = LIB.hnapi_receive(c, ticket, waitMs, buf, SizeT.of(buf.length), len);
        // ABI contract 4: the answer stays with the ticket for the next call.
        for (int i = 0; rc == TOO_SMALL && i < 3; i++) {
            buf = new byte[Hnapi.bufferSize(len.getValue())];
            rc = LIB.hnapi_receive(c, ticket, 0, buf, SizeT.of(buf.length), len);
        }
        if (rc == PENDING) {
            return null;
        }
        if (rc != 0) {
            throw Hnapi.failure(rc, "hnapi_receive");
        }
        return Arrays.copyOf(buf, (int) len.getValue());
    }

    /** True once {@link #close()} was called. */
    public boolean isClosed() {
        try {
            handle.checkOpen();
            return false;
        } catch (IllegalStateException e) {
            return true;
        }
    }

    /**
     * Closes the client: its connection ends and answers not yet received are dropped.
     * Waits for calls in flight on other threads. Calling it again does nothing.
     */
    @Override
    public void close() {
        handle.run();
        cleanable.clean();
    }
}
