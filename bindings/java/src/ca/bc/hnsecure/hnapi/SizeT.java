package ca.bc.hnsecure.hnapi;

import com.sun.jna.IntegerType;
import com.sun.jna.Native;

/**
 * C's {@code size_t}: an unsigned integer of the platform's size ({@link Native#SIZE_T_SIZE}:
 * 4 bytes on a 32-bit JVM, 8 on a 64-bit one). A Java {@code long} in its place would
 * pass 8 bytes where a 32-bit library reads 4, and every argument after it would be read
 * from the wrong place.
 */
public final class SizeT extends IntegerType {
    private static final long serialVersionUID = 1L;

    /** Zero; JNA makes return values with this constructor. */
    public SizeT() {
        this(0);
    }

    /**
     * {@code value}, which must fit: at most {@code 0xFFFF_FFFF} on a 32-bit platform
     * ({@link IllegalArgumentException} otherwise, from JNA).
     */
    public SizeT(long value) {
        super(Native.SIZE_T_SIZE, value, true);
    }

    /** {@code n} as a {@code size_t}: Java lengths are never negative. */
    public static SizeT of(int n) {
        if (n < 0) {
            throw new IllegalArgumentException("a negative length: " + n);
        }
        return new SizeT(n);
    }
}
