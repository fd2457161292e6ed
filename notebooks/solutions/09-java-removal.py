# Reference solution for notebook 09's exercise: it replaces the whole exercise cell.
# Two methods added to Broken.java: @OnClose and @OnError, each removing the session by its id.
BROKEN_JAVA = r"""
package lab;

import jakarta.websocket.*;
import jakarta.websocket.server.ServerEndpoint;
import java.util.Map;
import java.util.concurrent.*;
import java.util.logging.*;

/**
 * The seed's bug, on purpose: every session goes into a static map in @OnOpen and never leaves it.
 * There is no @OnClose and no @OnError, so a client that vanished stays in the map, and every
 * broadcast writes to it again.
 */
@ServerEndpoint("/broken")
public class Broken {
    static final Logger LOG = Logger.getLogger(Broken.class.getName());
    // Static: Tomcat creates one Broken object per connection, and they all share this map.
    static final Map<String, Session> SESSIONS = new ConcurrentHashMap<>();
    // 4 bytes by default; -Dlab.payloadBytes=65536 fills a stalled client's buffers quickly.
    static final String MESSAGE = "x".repeat(Integer.getInteger("lab.payloadBytes", 4));

    static {   // one daemon thread broadcasts every 100 ms: the seed's "push to every client" loop
        Executors.newSingleThreadScheduledExecutor(task -> {
            Thread thread = new Thread(task, "broken-broadcast");
            thread.setDaemon(true);
            return thread;
        }).scheduleAtFixedRate(Broken::broadcast, 100, 100, TimeUnit.MILLISECONDS);
    }

    @OnOpen
    public void onOpen(Session session) {
        SESSIONS.put(session.getId(), session);   // added here, removed nowhere
        LOG.info("session [" + session.getId() + "] opened, " + SESSIONS.size() + " in the map");
    }

    @OnClose   // a close frame; or Tomcat closing the session after an error (code 1006)
    public void onClose(Session session) {
        SESSIONS.remove(session.getId());   // by its id: the map's key
    }

    @OnError   // an I/O error on this session: Tomcat calls onClose right after, and the first one removes it
    public void onError(Session session, Throwable error) {
        SESSIONS.remove(session.getId());
    }

    static void broadcast() {
        for (Session session : SESSIONS.values()) {
            try {
                session.getBasicRemote().sendText(MESSAGE);   // blocks until written, or fails
            } catch (Exception e) {   // like the seed: log it, keep the session, try again in 100 ms
                LOG.log(Level.SEVERE, "broadcast to session [" + session.getId() + "] failed", e);
            }
        }
    }
}
"""
