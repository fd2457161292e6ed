package lab;

import jakarta.websocket.*;
import jakarta.websocket.server.ServerEndpoint;
import java.util.List;
import java.util.Map;
import java.util.concurrent.*;
import java.util.logging.*;

/**
 * The seed's fix, and what it needs to work: forget a session as soon as Tomcat says it closed or
 * failed, skip sessions that are no longer open, and give every blocking send a deadline.
 */
@ServerEndpoint("/fixed")
public class Fixed {
    static final Logger LOG = Logger.getLogger(Fixed.class.getName());
    static final Map<String, Session> SESSIONS = new ConcurrentHashMap<>();

    static {   // the same broadcast loop as Broken's, on a daemon thread
        Executors.newSingleThreadScheduledExecutor(task -> {
            Thread thread = new Thread(task, "fixed-broadcast");
            thread.setDaemon(true);
            return thread;
        }).scheduleAtFixedRate(Fixed::broadcast, 100, 100, TimeUnit.MILLISECONDS);
    }

    @OnOpen
    public void onOpen(Session session) {
        Map<String, Object> properties = session.getUserProperties();
        // Tomcat's own session properties, in ms. A blocking send fails after this long (default 20000):
        properties.put("org.apache.tomcat.websocket.BLOCKING_SEND_TIMEOUT", setting(session, "sendTimeoutMs", 2000));
        // A session that read nothing, not even a ping, for this long is closed (0: off, the default).
        long readIdle = setting(session, "readIdleMs", 0);
        if (readIdle > 0) properties.put("org.apache.tomcat.websocket.READ_IDLE_TIMEOUT_MS", readIdle);
        // The standard API's idle timeout: closed only when nothing was read AND nothing written for this long.
        long maxIdle = setting(session, "maxIdleMs", 0);
        if (maxIdle > 0) session.setMaxIdleTimeout(maxIdle);
        // What the broadcast sends it: 4 bytes; "?payloadBytes=262144" fills a stalled client's buffers fast.
        properties.put("lab.message", "x".repeat((int) setting(session, "payloadBytes", 4)));
        SESSIONS.put(session.getId(), session);
        LOG.info("session [" + session.getId() + "] opened, " + SESSIONS.size() + " in the map");
    }

    @OnClose   // a close frame, the read idle timeout, or Tomcat closing the session after an error
    public void onClose(Session session, CloseReason reason) { remove(session, "onClose " + reason); }

    @OnError   // an I/O error on this session: Tomcat closes it right after
    public void onError(Session session, Throwable error) { remove(session, "onError " + error); }

    // A setting for one session: "/fixed?readIdleMs=2000" in its URL, else -Dlab.readIdleMs=..., else the default.
    static long setting(Session session, String name, long otherwise) {
        List<String> values = session.getRequestParameterMap().get(name);
        return values != null ? Long.parseLong(values.get(0)) : Long.getLong("lab." + name, otherwise);
    }

    static void remove(Session session, String why) {   // the first of onError, onClose... wins
        if (SESSIONS.remove(session.getId()) != null)
            LOG.info("session [" + session.getId() + "] removed by " + why + ", " + SESSIONS.size() + " in the map");
    }

    static void broadcast() {
        for (Session session : SESSIONS.values()) {
            if (!session.isOpen()) { remove(session, "broadcast: not open"); continue; }
            try {
                String message = (String) session.getUserProperties().get("lab.message");
                session.getBasicRemote().sendText(message);   // fails after sendTimeoutMs at most
            } catch (Exception e) {   // the seed's own fix: drop the session on its first failure
                LOG.warning("send to session [" + session.getId() + "] failed: " + e);
                remove(session, "the failed send");
            }
        }
    }
}
