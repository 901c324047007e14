package io.tillwatch.esnode;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import com.carrotsearch.randomizedtesting.RandomizedRunner;
import com.carrotsearch.randomizedtesting.annotations.ThreadLeakScope;
import com.carrotsearch.randomizedtesting.annotations.TimeoutSuite;
import com.carrotsearch.randomizedtesting.annotations.Timeout;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.node.MockNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.transport.netty4.Netty4Plugin;
import org.junit.Test;
import org.junit.runner.RunWith;

/**
 * The node's lifetime as one randomized-testing "test": start, block until
 * the JVM is asked to stop, close. See {@link Main} for why.
 */
@RunWith(RandomizedRunner.class)
// The node's threads outlive nothing we care about: the JVM exits after close.
@ThreadLeakScope(ThreadLeakScope.Scope.NONE)
@TimeoutSuite(millis = Integer.MAX_VALUE)
public class NodeSuite {
    static final String HOME_PROPERTY = "tillwatch.esnode.home";
    static final String PORT_PROPERTY = "tillwatch.esnode.port";

    @Test
    @Timeout(millis = Integer.MAX_VALUE)
    public void serve() throws Exception {
        Path home = Path.of(System.getProperty(HOME_PROPERTY)).toAbsolutePath();
        String httpPort = System.getProperty(PORT_PROPERTY);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.createDirectories(home.resolve("config"));

        Settings settings = Settings.builder()
            .put("cluster.name", "tillwatch-test")
            .put("node.name", "tillwatch-test-node")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            // Transport is only node-to-node; a range off 9300 avoids clashing
            // with a developer's own cluster.
            .put("transport.port", "19300-19400")
            .put("discovery.type", "single-node")
            // A nearly full CI disk must not turn the test node read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();

        Node node = new MockNode(settings, List.of(Netty4Plugin.class), home.resolve("config"), true, () -> {});
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                System.err.println("esnode: close: " + e);
            } finally {
                stopped.countDown();
            }
        }, "esnode-shutdown"));
        node.start();
        System.out.println("esnode: started on http://127.0.0.1:" + httpPort);
        stopped.await();
    }
}
