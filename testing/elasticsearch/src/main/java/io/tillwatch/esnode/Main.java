package io.tillwatch.esnode;

import org.junit.runner.JUnitCore;
import org.junit.runner.Result;
import org.junit.runner.notification.Failure;

/**
 * Starts one genuine Elasticsearch node (Elastic's own 8.x server jar from
 * Maven Central) for tillwatch's integration tests and blocks until
 * SIGTERM/SIGINT.
 *
 * <p>Usage: {@code java -Xmx512m -cp 'target/classes:target/lib/*' io.tillwatch.esnode.Main HOME [HTTP_PORT]}.
 * HOME receives data/, logs/ and config/ and is created if missing. The node
 * listens on 127.0.0.1 only. Elasticsearch refuses to run as root, so run it
 * as an unprivileged user (the Makefile's es-up does). What such a node lacks
 * next to a full distribution is in docs/elasticsearch-testing.md.
 *
 * <p>Why through JUnit: the node is built with the test framework's MockNode
 * (the only public way to hand it plugin classes, such as the Netty HTTP
 * transport, without a distribution's plugins/ and modules/ folders). Once the
 * test framework is on the classpath, Elasticsearch's Randomness insists on a
 * randomized-testing context, which only RandomizedRunner provides; so the
 * node runs inside one long "test" ({@link NodeSuite}).
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: esnode HOME [HTTP_PORT]");
            System.exit(2);
        }
        System.setProperty(NodeSuite.HOME_PROPERTY, args[0]);
        System.setProperty(NodeSuite.PORT_PROPERTY, args.length > 1 ? args[1] : "9200");
        Result result = JUnitCore.runClasses(NodeSuite.class);
        for (Failure f : result.getFailures()) {
            System.err.println("esnode: " + f.getMessage());
            System.err.println(f.getTrace());
        }
        System.exit(result.wasSuccessful() ? 0 : 1);
    }
}
