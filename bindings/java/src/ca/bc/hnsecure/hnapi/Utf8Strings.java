package ca.bc.hnsecure.hnapi;

import com.sun.jna.DefaultTypeMapper;
import com.sun.jna.ToNativeContext;
import com.sun.jna.ToNativeConverter;
import com.sun.jna.TypeMapper;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * Passes {@code String} arguments as NUL-terminated UTF-8, whatever the JVM's default
 * charset. JNA 5.13 (Debian's) converts {@code String} arguments with
 * {@code new NativeString(s, false)}, i.e. in the platform's default encoding, and ignores
 * {@code OPTION_STRING_ENCODING} for them: under {@code LANG=C} "café" would reach the
 * library as "caf?". A type mapper runs before that conversion.
 */
final class Utf8Strings {
    private Utf8Strings() {}

    static final TypeMapper MAPPER = mapper();

    private static TypeMapper mapper() {
        DefaultTypeMapper m = new DefaultTypeMapper();
        m.addToNativeConverter(String.class, new ToNativeConverter() {
            @Override
            public Object toNative(Object value, ToNativeContext context) {
                if (value == null) {
                    return null;
                }
                byte[] utf8 = ((String) value).getBytes(StandardCharsets.UTF_8);
                return Arrays.copyOf(utf8, utf8.length + 1); // the NUL
            }

            @Override
            public Class<?> nativeType() {
                return byte[].class;
            }
        });
        return m;
    }
}
