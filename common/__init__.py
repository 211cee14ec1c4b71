"""What the supervisor and the session processes both use that is not the wire: log
formatting, task helpers and WhatsApp message ids."""
