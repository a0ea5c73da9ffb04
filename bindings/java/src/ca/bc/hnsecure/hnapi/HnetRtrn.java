package ca.bc.hnsecure.hnapi;

/**
 * The return codes of {@code libhnapi} ({@code enum HnetRtrn} in {@code include/hnapi.h}),
 * under their C names and values. The values never change; a test compares this table
 * with the header's and with {@code hnapi_code_name}.
 */
public enum HnetRtrn {
    HNET_RTRN_SUCCESS(0),
    HNET_RTRN_INVALIDPARAMETER(1),
    HNET_RTRN_INVALIDFORMATERROR(2),
    HNET_RTRN_REMOTETIMEOUT(3),
    HNET_RTRN_DOMAINMISMATCH(4),
    HNET_RTRN_ENCRYPTIONERROR(5),
    HNET_RTRN_BUFFERTOOSMALL(6),
    HNET_RTRN_PENDING(7),
    HNET_RTRN_CONFIGERROR(8),
    HNET_RTRN_CONNECTIONERROR(9),
    HNET_RTRN_UNKNOWNTICKET(10),
    HNET_RTRN_INTERNALERROR(11),
    HNET_RTRN_UNKNOWNREQUEST(12),
    HNET_RTRN_TOOLARGE(13),
    HNET_RTRN_SHUTDOWN(14),
    ;

    private static final HnetRtrn[] BY_CODE = new HnetRtrn[values().length];

    static {
        for (HnetRtrn r : values()) {
            if (r.code < 0 || r.code >= BY_CODE.length || BY_CODE[r.code] != null) {
                throw new ExceptionInInitializerError("HnetRtrn values must be 0..n-1, each once");
            }
            BY_CODE[r.code] = r;
        }
    }

    private final int code;

    HnetRtrn(int code) {
        this.code = code;
    }

    /** The C value. */
    public int code() {
        return code;
    }

    /**
     * The code with the C value {@code code}.
     *
     * @throws IllegalArgumentException when no code has that value (a library newer than
     *     these bindings)
     */
    public static HnetRtrn fromCode(int code) {
        if (code < 0 || code >= BY_CODE.length) {
            throw new IllegalArgumentException("no HnetRtrn has the value " + code);
        }
        return BY_CODE[code];
    }
}
