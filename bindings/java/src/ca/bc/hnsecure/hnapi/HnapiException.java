package ca.bc.hnsecure.hnapi;

/**
 * A {@code libhnapi} call returned a non-zero code: no HL7 answer could be formed. Carries
 * the code and the library's one-sentence explanation ({@code hnapi_last_error}, read on
 * the failing thread right after the call). The text never contains message content.
 *
 * <p>A transaction that timed out or could not reach the gateway is not an exception: the
 * call succeeds with an AR ACK from HNAPI (ABI contract, point 2).
 */
public class HnapiException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int rawCode;
    private final HnetRtrn code;
    private final String detail;

    /**
     * @param rawCode the value the library returned
     * @param function the C function that returned it
     * @param detail the library's last-error text
     */
    public HnapiException(int rawCode, String function, String detail) {
        super(function + ": " + Hnapi.codeName(rawCode) + (detail.isEmpty() ? "" : ": " + detail));
        this.rawCode = rawCode;
        HnetRtrn known;
        try {
            known = HnetRtrn.fromCode(rawCode);
        } catch (IllegalArgumentException e) {
            known = null;
        }
        this.code = known;
        this.detail = detail;
    }

    /** The code, or {@code null} when the library returned a value these bindings do not know. */
    public HnetRtrn code() {
        return code;
    }

    /** The value the library returned. */
    public int rawCode() {
        return rawCode;
    }

    /** The library's explanation ({@code hnapi_last_error}); may be empty. */
    public String detail() {
        return detail;
    }
}
