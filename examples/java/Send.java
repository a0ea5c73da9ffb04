/*
 * Send.java — send one HL7 message file through hnsecure and print the answer.
 *
 *   javac -cp /usr/share/java/jna.jar -d out bindings/java/src/ca/bc/hnsecure/hnapi/*.java examples/java/Send.java
 *   java -cp out:/usr/share/java/jna.jar -Djna.library.path=target/release Send client.toml request.hl7
 *
 * The answer is printed with each segment on its own line. Exit status 0 when an HL7
 * answer came back (the receiver's, or a network ACK from HNAPI), 1 otherwise, 2 on
 * wrong usage.
 */
import ca.bc.hnsecure.hnapi.HnapiClient;
import ca.bc.hnsecure.hnapi.HnapiException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;

public final class Send {
    private Send() {}

    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: java Send CLIENT_TOML MESSAGE_FILE");
            System.exit(2);
        }
        byte[] message;
        try {
            message = Files.readAllBytes(Path.of(args[1]));
        } catch (IOException e) {
            System.err.println(args[1] + ": " + e.getMessage());
            System.exit(1);
            return;
        }
        try (HnapiClient client = HnapiClient.open(Path.of(args[0]))) {
            // A larger answer than the first buffer is handled inside: the answer is kept
            // by the library and the message is not sent twice.
            byte[] answer = client.sendReceive(message, null);
            PrintStream out = System.out;
            for (byte b : answer) {
                out.write(b == '\r' ? '\n' : b);
            }
            if (answer.length > 0 && answer[answer.length - 1] != '\r') {
                out.write('\n');
            }
            out.flush();
        } catch (HnapiException e) {
            System.err.println(e.getMessage());
            System.exit(1);
        }
    }
}
