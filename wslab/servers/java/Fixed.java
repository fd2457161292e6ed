package lab;

import jakarta.websocket.*;
import jakarta.websocket.server.ServerEndpoint;
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
    static final String MESSAGE = "x".repeat(Integer.getInteger("lab.payloadBytes", 4));
    // Tomcat's own session properties, in ms. A blocking send fails after this long (default 20000):
    static final long SEND_TIMEOUT_MS = Long.getLong("lab.sendTimeoutMs", 2000);
    // A session that read nothing, not even a ping, for this long is closed (0: off, the default).
    static final long READ_IDLE_MS = Long.getLong("lab.readIdleMs", 0);

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
        properties.put("org.apache.tomcat.websocket.BLOCKING_SEND_TIMEOUT", SEND_TIMEOUT_MS);
        if (READ_IDLE_MS > 0) properties.put("org.apache.tomcat.websocket.READ_IDLE_TIMEOUT_MS", READ_IDLE_MS);
        SESSIONS.put(session.getId(), session);
        LOG.info("session [" + session.getId() + "] opened, " + SESSIONS.size() + " in the map");
    }

    @OnClose   // a close frame, the read idle timeout, or Tomcat closing the session after an error
    public void onClose(Session session, CloseReason reason) { remove(session, "onClose " + reason); }

    @OnError   // an I/O error on this session: Tomcat closes it right after
    public void onError(Session session, Throwable error) { remove(session, "onError " + error); }

    static void remove(Session session, String why) {   // the first of onError, onClose... wins
        if (SESSIONS.remove(session.getId()) != null)
            LOG.info("session [" + session.getId() + "] removed by " + why + ", " + SESSIONS.size() + " in the map");
    }

    static void broadcast() {
        for (Session session : SESSIONS.values()) {
            if (!session.isOpen()) { remove(session, "broadcast: not open"); continue; }
            try {
                session.getBasicRemote().sendText(MESSAGE);   // fails after SEND_TIMEOUT_MS at most
            } catch (Exception e) {   // the seed's own fix: drop the session on its first failure
                LOG.warning("send to session [" + session.getId() + "] failed: " + e);
                remove(session, "the failed send");
            }
        }
    }
}
