package lifeboat.testkit;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.opensearch.common.settings.Settings;
import org.opensearch.node.MockNode;
import org.opensearch.node.Node;
import org.opensearch.transport.Netty4Plugin;

/**
 * A real, single OpenSearch node for lifeboat's tests, started embedded in this JVM.
 *
 * <p>Usage: {@code java -cp classes:lib/* lifeboat.testkit.OpenSearchNode PORT DIR}. The node
 * listens for HTTP on {@code 127.0.0.1:PORT} and for transport on a free loopback port; its home,
 * data, logs and snapshot repositories ({@code path.repo}) live under DIR ({@code DIR/home},
 * {@code DIR/data}, {@code DIR/logs}, {@code DIR/repo}). It prints
 * {@code opensearch ready http://127.0.0.1:PORT} once the node has started, and closes the node on
 * SIGTERM (a shutdown hook).
 *
 * <p>Why {@link MockNode}: it is the test framework's {@link Node} that takes plugins from the
 * classpath, so the netty4 HTTP module runs without an OpenSearch distribution (no plugin
 * directories, no bootstrap, no root check). Security is off: no security plugin is loaded, the
 * REST API is plain HTTP without authentication.
 */
public final class OpenSearchNode {
    private OpenSearchNode() {}

    /**
     * Starts the node and waits until the JVM is told to stop.
     *
     * @param args the HTTP port and the directory for the node's files
     * @throws Exception when the node cannot be set up
     */
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: OpenSearchNode PORT DIR");
            System.exit(2);
        }
        // Our log configuration, not the test framework's log4j2-test.properties
        // (which would win by name): log to standard error, and no log4j
        // shutdown hook, so the node's closing is still logged.
        System.setProperty("log4j2.configurationFile", "classpath:lifeboat-opensearch-log4j2.properties");
        int port = Integer.parseInt(args[0]);
        Path dir = Path.of(args[1]).toAbsolutePath();
        Path home = dir.resolve("home");
        Path data = dir.resolve("data");
        Path logs = dir.resolve("logs");
        Path repo = dir.resolve("repo");
        for (Path p : List.of(home, data, logs, repo)) {
            Files.createDirectories(p);
        }

        Settings settings = Settings.builder()
            .put("cluster.name", "lifeboat-test")
            .put("node.name", "lifeboat-test-node")
            .put("discovery.type", "single-node")
            .put("path.home", home.toString())
            .put("path.data", data.toString())
            .put("path.logs", logs.toString())
            .put("path.repo", repo.toString())
            .put("network.host", "127.0.0.1")
            .put("http.port", port)
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // Any free loopback port: nothing connects to the transport of a single node.
            .put("transport.port", "0")
            // A test node: no disk-watermark surprises on a full CI disk, no swapping off.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("bootstrap.memory_lock", false)
            .put("action.auto_create_index", true)
            .build();

        Node node = new MockNode(settings, List.of(Netty4Plugin.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                LogManager.shutdown();
                stopped.countDown();
            }
        }, "opensearch-stop"));

        try {
            node.start();
        } catch (Exception e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("opensearch ready http://127.0.0.1:" + port);
        System.out.flush();
        stopped.await();
    }
}
