package ca.bc.hnsecure.hnapi;

import com.sun.jna.Native;
import com.sun.jna.ptr.ByReference;

/**
 * C's {@code size_t *}: room for one {@code size_t} of the platform's size
 * ({@link Native#SIZE_T_SIZE}). The library writes 4 bytes there on a 32-bit platform; a
 * {@code LongByReference} would leave the high half of its 8 bytes as it was.
 */
public final class SizeTByReference extends ByReference {
    /** Zero. */
    public SizeTByReference() {
        this(0);
    }

    /** {@code value}, cut to the platform's size. */
    public SizeTByReference(long value) {
        super(Native.SIZE_T_SIZE);
        setValue(value);
    }

    /** Sets the value (cut to the platform's size). */
    public void setValue(long value) {
        if (Native.SIZE_T_SIZE == 8) {
            getPointer().setLong(0, value);
        } else {
            getPointer().setInt(0, (int) value);
        }
    }

    /** The value, read as unsigned. */
    public long getValue() {
        if (Native.SIZE_T_SIZE == 8) {
            return getPointer().getLong(0);
        }
        return Integer.toUnsignedLong(getPointer().getInt(0));
    }
}
