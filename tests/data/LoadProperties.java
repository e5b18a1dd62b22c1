// Loads each properties file given as an argument twice, as Spark does
// (a UTF-8 Reader) and as java.util.Properties does by default (an
// InputStream, ISO-8859-1), and prints every key and value as hex UTF-16
// code units: "<file-index> <key-hex> <utf8-reader-value-hex> <stream-value-hex>".
// Run as a single-file program: java LoadProperties.java FILE...
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.Reader;
import java.nio.charset.StandardCharsets;
import java.util.Properties;
import java.util.TreeSet;

public class LoadProperties {
    static String hex(String text) {
        StringBuilder out = new StringBuilder("x");
        for (int i = 0; i < text.length(); i++) {
            out.append(String.format("%04x", (int) text.charAt(i)));
        }
        return out.toString();
    }

    public static void main(String[] args) throws Exception {
        for (int index = 0; index < args.length; index++) {
            Properties viaReader = new Properties();
            try (Reader reader = new InputStreamReader(new FileInputStream(args[index]),
                                                       StandardCharsets.UTF_8)) {
                viaReader.load(reader);
            }
            Properties viaStream = new Properties();
            try (InputStream stream = new FileInputStream(args[index])) {
                viaStream.load(stream);
            }
            TreeSet<String> keys = new TreeSet<>(viaReader.stringPropertyNames());
            keys.addAll(viaStream.stringPropertyNames());
            for (String key : keys) {
                String a = viaReader.getProperty(key);
                String b = viaStream.getProperty(key);
                System.out.println(index + " " + hex(key) + " " + (a == null ? "-" : hex(a))
                                   + " " + (b == null ? "-" : hex(b)));
            }
        }
    }
}
