"""What the supervisor and the session processes both use that is not the wire: log
formatting, task helpers, closing several things in a row and WhatsApp message ids."""
