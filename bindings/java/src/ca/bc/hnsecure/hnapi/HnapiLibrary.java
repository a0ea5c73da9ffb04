package ca.bc.hnsecure.hnapi;

import com.sun.jna.Callback;
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import java.util.Map;

/**
 * The C ABI of {@code libhnapi} ({@code include/hnapi.h}), one method per exported function,
 * mapped literally. Applications use {@link HnapiClient}, {@link HnapiServer} and
 * {@link Hnapi}; this interface is public for those who need the raw calls.
 *
 * <p>Mapping: {@code size_t} is a {@link SizeT} and {@code size_t*} a {@link SizeTByReference},
 * both of the platform's size (4 bytes on a 32-bit JVM, 8 on a 64-bit one: a {@code long}
 * there would shift every later argument on a 32-bit JVM); {@code uint64_t} is
 * {@code long} (an opaque 64-bit value) and {@code uint64_t*} a {@link LongByReference};
 * {@code uint32_t} is {@code int}, so {@code UINT32_MAX} is {@code -1}; handles are {@link Pointer}s, made through a
 * {@link PointerByReference}; returned static strings are {@link Pointer}s (never
 * {@code String}: JNA must not free or re-encode them), read with
 * {@code getString(0, "UTF-8")}. Strings passed in are encoded as NUL-terminated UTF-8
 * whatever the platform's default charset: the string-encoding option alone does not do it
 * for arguments in JNA 5.13 (see {@code Utf8Strings}), so a type mapper does.
 *
 * <p>The library is found by JNA's usual search: {@code -Djna.library.path=DIR}, then the
 * system's ({@code LD_LIBRARY_PATH}, {@code PATH} on Windows).
 */
public interface HnapiLibrary extends Library {
    /** The loaded library. */
    HnapiLibrary INSTANCE = Native.load("hnapi", HnapiLibrary.class, Map.of(
            Library.OPTION_STRING_ENCODING, "UTF-8",
            Library.OPTION_TYPE_MAPPER, Utf8Strings.MAPPER));

    /** {@code UINT32_MAX} as a {@code uint32_t} argument: wait until the answer or request exists. */
    int WAIT_FOREVER = -1;

    /**
     * {@code typedef void (*HnapiLogCallback)(int32_t level, const char *line, void *ctx)}:
     * {@code line} is NUL-terminated UTF-8 valid during the call. May be called from any
     * thread, including the library's own.
     */
    interface HnapiLogCallback extends Callback {
        /** Receives one log line. */
        void invoke(int level, Pointer line, Pointer ctx);
    }

    /** {@code const char *hnapi_version(void)} */
    Pointer hnapi_version();

    /** {@code const char *hnapi_code_name(int32_t code)} */
    Pointer hnapi_code_name(int code);

    /** {@code size_t hnapi_last_error(char *buf, size_t cap)} */
    SizeT hnapi_last_error(byte[] buf, SizeT cap);

    /** {@code int32_t hnapi_client_open(const char *config_path, HnapiClient **out)} */
    int hnapi_client_open(String configPath, PointerByReference out);

    /** {@code int32_t hnapi_client_open_toml(const char *config_toml, const char *base_dir, HnapiClient **out)} */
    int hnapi_client_open_toml(String configToml, String baseDir, PointerByReference out);

    /** {@code int32_t hnapi_send(HnapiClient *c, const uint8_t *msg, size_t msg_len, uint32_t timeout_ms, uint64_t *ticket)} */
    int hnapi_send(Pointer c, byte[] msg, SizeT msgLen, int timeoutMs, LongByReference ticket);

    /** {@code int32_t hnapi_receive(HnapiClient *c, uint64_t ticket, uint32_t wait_ms, uint8_t *buf, size_t cap, size_t *len)} */
    int hnapi_receive(Pointer c, long ticket, int waitMs, byte[] buf, SizeT cap, SizeTByReference len);

    /** {@code int32_t hnapi_send_receive(HnapiClient *c, const uint8_t *msg, size_t msg_len, uint32_t timeout_ms, uint8_t *buf, size_t cap, size_t *len)} */
    int hnapi_send_receive(Pointer c, byte[] msg, SizeT msgLen, int timeoutMs, byte[] buf, SizeT cap, SizeTByReference len);

    /** {@code void hnapi_client_close(HnapiClient *c)} */
    void hnapi_client_close(Pointer c);

    /** {@code void hnapi_set_log_callback(HnapiLogCallback cb, void *ctx, int32_t max_level)} */
    void hnapi_set_log_callback(HnapiLogCallback cb, Pointer ctx, int maxLevel);

    /** {@code int32_t hnapi_server_open(const char *config_path, HnapiServer **out)} */
    int hnapi_server_open(String configPath, PointerByReference out);

    /** {@code int32_t hnapi_server_receive(HnapiServer *s, uint32_t wait_ms, uint64_t *request_id, uint8_t *buf, size_t cap, size_t *len)} */
    int hnapi_server_receive(Pointer s, int waitMs, LongByReference requestId, byte[] buf, SizeT cap, SizeTByReference len);

    /** {@code int32_t hnapi_server_respond(HnapiServer *s, uint64_t request_id, const uint8_t *msg, size_t msg_len)} */
    int hnapi_server_respond(Pointer s, long requestId, byte[] msg, SizeT msgLen);

    /** {@code void hnapi_server_close(HnapiServer *s)} */
    void hnapi_server_close(Pointer s);

    /** {@code int32_t hnapi_server_wait_connected(HnapiServer *s, uint32_t wait_ms)} */
    int hnapi_server_wait_connected(Pointer s, int waitMs);

    /** {@code void hnapi_server_shutdown(HnapiServer *s)} */
    void hnapi_server_shutdown(Pointer s);

    /** {@code void hnapi_client_shutdown(HnapiClient *c)} */
    void hnapi_client_shutdown(Pointer c);
}
