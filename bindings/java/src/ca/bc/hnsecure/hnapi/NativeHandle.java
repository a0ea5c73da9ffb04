package ca.bc.hnsecure.hnapi;

import com.sun.jna.Pointer;
import java.lang.ref.Cleaner;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * A native handle shared by many threads: calls use it under a read lock, closing takes
 * the write lock, so the handle is released only when no call uses it (the ABI forbids
 * using a handle after closing it, and a Java object must not be able to cause that).
 * Also the {@link Cleaner} action for handles that were never closed.
 */
final class NativeHandle implements Runnable {
    static final Cleaner CLEANER = Cleaner.create();

    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final Consumer<Pointer> closer;
    private final String what;
    private Pointer pointer; // guarded by lock; null once closed
    private volatile boolean closed;

    NativeHandle(Pointer pointer, Consumer<Pointer> closer, String what) {
        this.pointer = pointer;
        this.closer = closer;
        this.what = what;
    }

    /** Runs {@code call} with the live handle; {@link IllegalStateException} once closed. */
    <T> T use(Function<Pointer, T> call) {
        checkOpen();
        lock.readLock().lock();
        try {
            if (pointer == null) {
                throw new IllegalStateException(what + " is closed");
            }
            return call.apply(pointer);
        } finally {
            lock.readLock().unlock();
        }
    }

    void checkOpen() {
        if (closed) {
            throw new IllegalStateException(what + " is closed");
        }
    }

    /** Closes: new calls fail at once, calls in flight finish first. Idempotent. */
    @Override
    public void run() {
        if (lock.getReadHoldCount() > 0) {
            throw new IllegalStateException(what + " cannot be closed from inside one of its own calls");
        }
        closed = true;
        lock.writeLock().lock();
        try {
            if (pointer != null) {
                Pointer p = pointer;
                pointer = null;
                closer.accept(p);
            }
        } finally {
            lock.writeLock().unlock();
        }
    }
}
